"""Freshness: from publish to queryable, at a sustained rate, in both input forms.

One process runs the stream as ``thumbline up`` does (key_by_trace, join and
rates, one worker, embedded broker in memory, chDB); a second process publishes
R feedback events a second, each after its trace, for D seconds, paced every
10 ms:

- ``batched``: the SDK (``FeedbackProducer.send_many``: JSON arrays on
  thumbline's partitions);
- ``single``: confluent-kafka, one JSON object per message on librdkafka's
  default partitioner.

Events carry no ``received_at`` of their own from the single sender, so it is
the Kafka timestamp of their publication; the SDK stamps the same moment. The
freshness of a row is ``inserted_at - received_at`` in the ``feedback`` table
(when ClickHouse stored it, so when a query first sees it). Reported: the rate
the sender kept, whether the stream kept up (every row in within 30 s of the
end), and the p50/p99/max of freshness over the rows of the last D - 5 seconds
(the first 5 s include the consumer group's join).

    python bench/freshness.py --rate 10000 --seconds 30 --input batched single
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from common import git_commit

from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import load_settings
from thumbline.store import apply_migrations, open_client

PARTITIONS = 8
TICK = 0.01


def pair(i: int, run: str) -> tuple[dict, dict]:
    trace_id = f"{run}-{i}"
    now = datetime.now(UTC).isoformat()
    trace = {"trace_id": trace_id, "project": f"p{i % 20}", "model": f"m{i % 5}",
             "capability": f"c{i % 8}", "environment": ("prod", "dev")[i % 2],
             "start_time": now}  # fmt: skip
    feedback = {"event_id": f"{trace_id}-f", "trace_id": trace_id, "project": f"p{i % 20}",
                "kind": "thumb", "value": ("up", "down")[i % 3 == 0], "ts": now}  # fmt: skip
    return trace, feedback


async def send_batched(bootstrap: str, prefix: str, rate: int, seconds: float) -> int:
    from thumbline.producers import FeedbackProducer
    from thumbline.schemas import FeedbackEvent, TraceEvent

    run, sent, began = uuid.uuid4().hex[:8], 0, time.monotonic()
    async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as sdk:
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate) - sent
            events: list = []
            for i in range(sent, sent + due):
                trace, feedback = pair(i, run)
                events += [TraceEvent.model_validate(trace), FeedbackEvent.model_validate(feedback)]
            if events:
                await sdk.send_many(events)
            sent += due
            await asyncio.sleep(TICK)
    return sent


def send_single(bootstrap: str, prefix: str, rate: int, seconds: float) -> int:
    from confluent_kafka import Producer

    topics = Topics.build(prefix, PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4"})  # fmt: skip
    run, sent, began = uuid.uuid4().hex[:8], 0, time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) - sent
        for i in range(sent, sent + due):
            trace, feedback = pair(i, run)
            key = trace["trace_id"].encode()
            producer.produce(topics.traces.name, orjson.dumps(trace), key)
            producer.produce(topics.feedback.name, orjson.dumps(feedback), key)
        sent += due
        producer.poll(0)
        time.sleep(TICK)
    producer.flush(60)
    return sent


def sender(args: argparse.Namespace) -> None:
    if args.form == "batched":
        sent = asyncio.run(send_batched(args.bootstrap, args.prefix, args.rate, args.seconds))
    else:
        sent = send_single(args.bootstrap, args.prefix, args.rate, args.seconds)
    print(json.dumps({"sent": sent}))


async def measure(bootstrap: str, data_dir: Path, form: str, rate: int, seconds: float) -> dict:
    from thumbline.stream_jobs.app import StreamApp

    prefix = f"fresh-{form}-{uuid.uuid4().hex[:6]}."
    settings = load_settings(  # one chDB path per process: a database per run
        data_dir=data_dir, clickhouse_database=prefix.replace("-", "_").rstrip("."),
        topic_prefix=prefix, partitions=PARTITIONS, log_level="WARNING",
    )  # fmt: skip
    await ensure_topics(bootstrap, Topics.build(prefix, PARTITIONS).all())
    client = open_client(settings)
    db = settings.clickhouse_database
    apply_migrations(client, db)
    app = StreamApp(settings, bootstrap)
    await app.start()
    began = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--send", form, "--bootstrap", bootstrap, "--prefix", prefix,
        "--rate", str(rate), "--seconds", str(seconds), stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    ended = time.time()
    count = f"SELECT count() FROM {db}.feedback"
    kept_up = False
    while time.time() - ended < 30:
        if (await asyncio.to_thread(client.query, count)).result_rows[0][0] >= sent:
            kept_up = True
            break
        await asyncio.sleep(0.5)
    settled = began + 5
    p50, p99, top, rows = (await asyncio.to_thread(client.query, f"""
        SELECT quantileExact(0.5)(d), quantileExact(0.99)(d), max(d), count() FROM (
          SELECT dateDiff('millisecond', received_at, inserted_at) AS d FROM {db}.feedback
          WHERE received_at >= fromUnixTimestamp64Milli({int(settled * 1000)}))
    """)).result_rows[0]  # fmt: skip
    await app.stop()
    client.close()
    return {"form": form, "rate": rate, "sent": sent, "sent_per_s": sent / (ended - began),
            "kept_up": kept_up, "p50_ms": p50, "p99_ms": p99, "max_ms": top,
            "rows": rows}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    rows, data_dir = [], Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    with EmbeddedBroker(log_path=Path(tempfile.mkdtemp()) / "broker.log") as broker:
        for form in args.input:
            for rate in args.rate:
                result = await measure(broker.bootstrap, data_dir, form, rate, args.seconds)
                print(json.dumps(result), flush=True)
                rows.append(result)
    print("\n| input | feedback/s asked | kept by the sender | stream kept up | rows measured "
          "| p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        print(f"| {r['form']} | {r['rate']:,} | {r['sent_per_s']:,.0f} | "
              f"{'yes' if r['kept_up'] else 'no'} | {r['rows']:,} | {r['p50_ms']:,} | "
              f"{r['p99_ms']:,} | {r['max_ms']:,} |")  # fmt: skip
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, commit {git_commit()}, {args.seconds:g} s per run")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, nargs="+", default=[10_000])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--input", nargs="+", default=["batched", "single"],
                        choices=["batched", "single"])  # fmt: skip
    parser.add_argument("--send", dest="form", choices=["batched", "single"])
    parser.add_argument("--bootstrap")
    parser.add_argument("--prefix")
    args = parser.parse_args()
    if args.form:
        args.rate = args.rate[0]
        sender(args)
    else:
        asyncio.run(main(args))
