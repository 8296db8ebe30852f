"""Gateway throughput and latency, against the SDK straight to Kafka as the baseline.

One invocation, one embedded broker, fresh topics per run, the same events:

- **kafka_sdk** (baseline): ``FeedbackProducer.send_many`` in this process.
- **gateway_batch**: ``POST /v1/feedback`` with arrays of ``--batch`` events
  from ``--clients`` concurrent clients, to ``thumbline gateway`` running as
  its own process (with an ingest key, as in production).
- **gateway_single**: one event per request, same clients.

Every run counts only events the gateway answered 202 for, and the topic is
read back to check that they are all there. Then a fixed-rate run sends single
events at ``--rate`` requests a second and reports latency percentiles.

With ``--brokers memory durable`` all of it runs once on each embedded broker
(in memory, then durable on a local SeaweedFS), each on its own broker, and
the durable one's rates and latencies are also given as ratios to memory's.

    python bench/gateway.py --events 50000 --rate 200
    python bench/gateway.py --brokers memory durable
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import STORAGES, embedded_broker, git_commit, running_gateway  # noqa: E402
from producer_throughput import count_events, make_events  # noqa: E402

from thumbline.kafka import ensure_topics  # noqa: E402
from thumbline.producers import FeedbackProducer  # noqa: E402
from thumbline.schemas import Topics  # noqa: E402


def encoded(events: list) -> list[bytes]:
    return [type(e).__pydantic_serializer__.to_json(e, exclude_none=True) for e in events]


async def post_all(url: str, key: str, bodies: list[bytes], clients: int) -> tuple[int, float]:
    """Post every body with ``clients`` workers; (events accepted, seconds)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(url, data=body, headers=headers) as r:
                answer = orjson.loads(await r.read())
                if r.status != 202:
                    raise SystemExit(f"gateway answered {r.status}: {answer}")
                accepted += answer["accepted"]

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(clients)))
        return accepted, time.perf_counter() - start


async def latency(url: str, key: str, bodies: list[bytes], rate: float) -> list[float]:
    """Single-event requests at a fixed rate; each request's seconds."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out: list[float] = []

    async def one(http: aiohttp.ClientSession, body: bytes) -> None:
        start = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as r:
            await r.read()
            assert r.status == 202, r.status
        out.append(time.perf_counter() - start)

    async with aiohttp.ClientSession() as http:
        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, body)))
        await asyncio.gather(*tasks)
    return out


async def measure(
    args: argparse.Namespace, storage: str, events: list
) -> tuple[list[tuple[str, int, float]], list[float]]:
    """Every run on a fresh embedded broker of ``storage``: (rows, sorted latencies)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, embedded_broker(storage, Path(tmp)) as broker:
        # baseline: the SDK straight to Kafka
        topics = Topics.build("kafka.", 8)
        await ensure_topics(broker.bootstrap, topics.all())
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix="kafka."
        ) as fb:
            start = time.perf_counter()
            await fb.send_many(events)
            seconds = time.perf_counter() - start
        found, _ = await count_events(broker.bootstrap, topics.feedback.name, len(events))
        assert found == len(events), (found, len(events))
        rows.append(("kafka_sdk", len(events), seconds))

        await ensure_topics(broker.bootstrap, Topics.build("thumbline.", 8).all())
        async with running_gateway(
            broker.bootstrap, Path(tmp) / "data", project="default",
            env={"THUMBLINE_GATEWAY_KEY_CACHE_SECONDS": "1"},
        ) as (base, key):  # fmt: skip
            url = f"{base}/v1/feedback"
            items = encoded(events)
            batches = [
                b"[" + b",".join(items[i : i + args.batch]) + b"]"
                for i in range(0, len(items), args.batch)
            ]
            accepted, seconds = await post_all(url, key, batches, args.clients)
            rows.append((f"gateway_batch ({args.batch}/request)", accepted, seconds))
            singles = items[: args.single_events]
            accepted_single, seconds_single = await post_all(url, key, singles, args.clients)
            rows.append(("gateway_single (1/request)", accepted_single, seconds_single))
            total = accepted + accepted_single
            found, _ = await count_events(broker.bootstrap, "thumbline.feedback", total)
            assert found >= total, (found, total)  # every 202 is in Kafka

            n = int(args.rate * args.latency_seconds)
            times = sorted(await latency(url, key, items[:n], args.rate))

    return rows, times


def table(rows: list[tuple[str, int, float]], times: list[float], args) -> dict[str, float]:
    """Print one broker's results; return its rates and latencies by name, for ratios."""
    print("\n| run | events accepted | seconds | events/s | ratio to kafka_sdk |")
    print("|---|---|---|---|---|")
    base_rate = rows[0][1] / rows[0][2]
    figures = {}
    for name, count, seconds in rows:
        rate = count / seconds
        figures[name] = rate
        print(f"| {name} | {count:,} | {seconds:.2f} | {rate:,.0f} | {rate / base_rate:.2f}x |")

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] * 1000

    figures.update(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99))
    print(f"\nLatency, single events at {args.rate:g} requests/s for {args.latency_seconds:g} s "
          f"({len(times)} requests): p50 {pct(0.5):.1f} ms, p90 {pct(0.9):.1f} ms, "
          f"p99 {pct(0.99):.1f} ms, max {times[-1] * 1000:.1f} ms, "
          f"mean {statistics.mean(times) * 1000:.1f} ms")  # fmt: skip
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--single-events", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s for latency")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--brokers", nargs="+", default=["memory"], choices=STORAGES,
        help="embedded broker storages to run on, in this order",
    )  # fmt: skip
    args = parser.parse_args()

    events = make_events(args.events)
    measured = {storage: await measure(args, storage, events) for storage in args.brokers}
    today = f"{datetime.now(UTC):%Y-%m-%d}"
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, {today}, commit {git_commit()}")
    figures = {}
    for storage, (rows, times) in measured.items():
        print(f"\n### broker: {storage}")
        figures[storage] = table(rows, times, args)
    if "memory" in figures:
        for storage, values in figures.items():
            if storage != "memory":
                ratios = ", ".join(
                    f"{name} {value / figures['memory'][name]:.2f}x"
                    for name, value in values.items()
                )
                print(f"\nratio {storage} / memory: {ratios}")
    print(
        f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
    )


if __name__ == "__main__":
    asyncio.run(main())
