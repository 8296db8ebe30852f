"""Producer throughput: the SDK's batched JSON-array messages against one event per message.

Both run in the same invocation against the same embedded broker, on fresh
topics, with the same events; the baseline is what a hand-written aiokafka
producer does (one JSON object per message, keyed by trace_id, acks=all).
Each run ends when every event is acknowledged and counts are checked by
reading the topic back. Prints a Markdown table row per run and the ratio.

    python bench/producer_throughput.py --events 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import statistics
import subprocess
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.producers import FeedbackProducer
from thumbline.schemas import FeedbackEvent, Topics


def make_events(n: int) -> list[FeedbackEvent]:
    kinds = [
        {"kind": "thumb", "value": "down", "comment": "wrong answer"},
        {"kind": "rating", "value": 4},
        {"kind": "signal", "name": "copied"},
        {"label": "good"},
    ]
    return [
        FeedbackEvent.parse(
            {"trace_id": f"trace-{i % 50_000}", "user_id": f"u{i % 997}", **kinds[i % 4]}
        )
        for i in range(n)
    ]


async def count_events(bootstrap: str, topic: str, expected: int) -> tuple[int, int]:
    """(events, messages) on the topic, read back from the start."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    seen = messages_seen = 0
    try:
        deadline = time.monotonic() + 120
        while seen < expected and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                messages_seen += len(messages)
                for m in messages:
                    value = orjson.loads(m.value)
                    seen += len(value) if isinstance(value, list) else 1
    finally:
        await consumer.stop()
    return seen, messages_seen


async def run_sdk(bootstrap: str, prefix: str, events: list[FeedbackEvent]) -> float:
    async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as fb:
        start = time.perf_counter()
        futures = [fb.send_nowait(e) for e in events]
        await asyncio.gather(*futures)
        return time.perf_counter() - start


async def run_sdk_bulk(bootstrap: str, prefix: str, events: list[FeedbackEvent]) -> float:
    async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as fb:
        start = time.perf_counter()
        await fb.send_many(events)
        return time.perf_counter() - start


async def run_baseline(bootstrap: str, prefix: str, events: list[FeedbackEvent]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type="lz4", linger_ms=5
    )
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(f"{prefix}feedback", e.to_json(), key=e.trace_id.encode())
            for e in events
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


def git_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (git from PATH, a dev tool)
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


async def main(n: int, repeat: int) -> None:
    events = make_events(n)
    results: dict[str, list[float]] = {"baseline": [], "sdk": [], "sdk-bulk": []}
    print("| run | producer | events | messages | seconds | events/s |")
    print("|---|---|---|---|---|---|")
    with EmbeddedBroker() as broker:
        for r in range(repeat):
            runs = (("baseline", run_baseline), ("sdk", run_sdk), ("sdk-bulk", run_sdk_bulk))
            for name, runner in runs:
                prefix = f"bench{r}{name}."
                await ensure_topics(broker.bootstrap, Topics.build(prefix, 8).all())
                seconds = await runner(broker.bootstrap, prefix, events)
                got, messages = await count_events(broker.bootstrap, f"{prefix}feedback", n)
                assert got == n, f"{name}: {got} events on the topic, expected {n}"
                results[name].append(n / seconds)
                print(
                    f"| {r + 1} | {name} | {n} | {messages} | {seconds:.2f} | {n / seconds:,.0f} |"
                )
    base = statistics.median(results["baseline"])
    sdk, bulk = statistics.median(results["sdk"]), statistics.median(results["sdk-bulk"])
    commit = git_commit()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nmedian events/s: baseline {base:,.0f}; sdk send_nowait {sdk:,.0f} "
        f"({sdk / base:.1f}x); sdk send_many {bulk:,.0f} ({bulk / base:.1f}x); "
        f"peak RSS {rss:.0f} MB; {platform.machine()}, {datetime.now(UTC):%Y-%m-%d}, "
        f"commit {commit}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.repeat))
