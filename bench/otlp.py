"""OpenTelemetry in: spans/s through each OTLP input, against thumbline's own batched traces.

One invocation, one embedded broker, the same spans: ``--traces`` traces made by
the OpenTelemetry SDK, each a root span and a GenAI ``chat`` span with its
attributes and the question and answer, encoded by the exporters' own encoder
into requests of ``--spans-per-request`` spans (the BatchSpanProcessor's 512).

- **stage**: key_by_trace's routing of the input messages, in this process, no
  broker: thumbline's batched JSON traces (the SDK's messages of the same spans
  as TraceEvents; the baseline) against the Collector's ``otlp_proto`` and
  ``otlp_json`` messages. Best of three.
- **end to end**: a stream app in a process of its own per input, on topics
  filled beforehand, until every span is a row of ``traces FINAL`` (from the
  start of the app: group join and first fetch included).
- **gateway**: ``thumbline gateway`` as its own process with an ingest key,
  ``--clients`` concurrent clients: spans Kafka acknowledged per second through
  ``POST /v1/traces`` (arrays of the same TraceEvents; the baseline) and
  ``POST /otlp/v1/traces`` (protobuf, JSON).

    python bench/otlp.py --traces 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import embedded_broker, git_commit, running_gateway  # noqa: E402

from tests.otel import otlp_json, otlp_proto, provider, traced_chat  # noqa: E402
from thumbline.kafka import ensure_topics  # noqa: E402
from thumbline.schemas import Topics, TraceEvent  # noqa: E402
from thumbline.schemas.otlp import decode_request, events_from_request  # noqa: E402
from thumbline.schemas.topics import otlp_topic  # noqa: E402
from thumbline.stream_jobs.keyed_messages import route  # noqa: E402
from thumbline.stream_jobs.read_otlp import ReadOtlp  # noqa: E402

PARTITIONS = 8
INPUTS = ("batched", "otlp_proto", "otlp_json")


def make_spans(traces: int, per_request: int) -> dict[str, list[bytes]]:
    """Each input's messages of the same spans."""
    tracer_provider, exporter = provider()
    for i in range(traces):
        traced_chat(tracer_provider, user=f"user-{i % 500}", session=f"session-{i % 2000}",
                    model=f"model-{i % 5}")  # fmt: skip
    spans = exporter.get_finished_spans()
    groups = [spans[i : i + per_request] for i in range(0, len(spans), per_request)]
    proto = [otlp_proto(g) for g in groups]
    events: list[TraceEvent] = []
    for body in proto:
        events.extend(events_from_request(decode_request(body, "otlp_proto")).traces)
    dumped = [e.model_dump(mode="json", exclude_none=True) for e in events]
    batched = [orjson.dumps(dumped[i : i + 500]) for i in range(0, len(dumped), 500)]
    return {"batched": batched, "otlp_proto": proto, "otlp_json": [otlp_json(g) for g in groups],
            "spans": [str(len(spans)).encode()]}  # fmt: skip


def stage(messages: dict[str, list[bytes]], spans: int) -> dict[str, float]:
    """Spans/s through key_by_trace's routing, best of three."""
    topics = Topics.build("bench.", PARTITIONS)
    out = {}
    now = int(time.time() * 1000)
    for name in INPUTS:
        topic = topics.traces.name if name == "batched" else "otlp_spans"
        otlp = ReadOtlp("otlp_spans", name) if name != "batched" else None  # type: ignore[arg-type]
        records = [
            SimpleNamespace(
                topic=topic, partition=i % PARTITIONS, offset=i, value=v, key=None, timestamp=now
            )  # fmt: skip
            for i, v in enumerate(messages[name])
        ]
        best = float("inf")
        for _ in range(3):
            counts: dict[str, int] = defaultdict(int)
            start = time.perf_counter()
            route(topics, records, counts=counts, otlp=otlp)
            best = min(best, time.perf_counter() - start)
            assert counts[f"out:{topics.keyed.name}"] == spans, (name, dict(counts))
        out[name] = spans / best
    return out


def child(spec: dict) -> None:
    """One stream app on pre-filled topics, until every span is stored."""
    from thumbline.settings import load_settings
    from thumbline.store import apply_migrations, open_client
    from thumbline.stream_jobs.app import StreamApp

    async def run() -> dict:
        settings = load_settings(
            data_dir=Path(tempfile.mkdtemp(prefix="bench-otlp-")), topic_prefix=spec["prefix"],
            partitions=PARTITIONS, sink_max_seconds=0.5, otlp_topic=spec["otlp_topic"],
            otlp_encoding=spec["encoding"], log_level="WARNING",
        )  # fmt: skip
        client = open_client(settings)
        db = settings.clickhouse_database
        apply_migrations(client, db)
        app = StreamApp(settings, spec["bootstrap"], app_id=f"{spec['prefix']}group")
        start = time.perf_counter()
        await app.start()
        rows, deadline = 0, start + spec["budget"]
        while time.perf_counter() < deadline:
            rows = client.query(f"SELECT count() FROM {db}.traces FINAL").result_rows[0][0]
            if rows >= spec["spans"]:
                break
            await asyncio.sleep(0.25)
        seconds = time.perf_counter() - start
        await app.stop()
        return {"rows": rows, "seconds": seconds}

    result = asyncio.run(run())
    sys.stdout.write(json.dumps(result) + "\n")


async def fill(bootstrap: str, messages: dict[str, list[bytes]], name: str, prefix: str) -> str:
    """Put one input's messages on its topic; returns the OTLP topic the run reads."""
    topics = Topics.build(prefix, PARTITIONS)
    otlp = f"{prefix}otlp_spans"
    await ensure_topics(bootstrap, (*topics.all(), otlp_topic(otlp, PARTITIONS)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=8 * 1024 * 1024, linger_ms=5)  # fmt: skip
    await producer.start()
    try:
        target = topics.traces.name if name == "batched" else otlp
        sent = [await producer.send(target, v, key=os.urandom(8)) for v in messages[name]]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return otlp


async def end_to_end(bootstrap: str, messages: dict[str, list[bytes]], spans: int,
                     budget: float) -> dict[str, dict]:  # fmt: skip
    out = {}
    for index, name in enumerate(INPUTS):
        prefix = f"e2e{index}-{int(time.time())}."
        otlp = await fill(bootstrap, messages, name, prefix)
        spec = {"prefix": prefix, "otlp_topic": otlp, "bootstrap": bootstrap, "spans": spans,
                "budget": budget,
                "encoding": name if name != "batched" else "otlp_proto"}  # fmt: skip
        proc = subprocess.run(  # noqa: ASYNC221, S603 (this script, our arguments)
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{name}: the stream failed: {proc.stderr[-3000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


async def post_all(url: str, headers: dict, bodies: list[bytes], clients: int,
                   otlp: bool) -> float:  # fmt: skip
    """Post every body with ``clients`` workers; the seconds it took."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(url, data=body, headers=headers) as r:
                answer = await r.read()
                if r.status != (200 if otlp else 202):
                    raise SystemExit(f"{url} answered {r.status}: {answer[:500]!r}")
                if otlp and b"rejected" in answer:
                    raise SystemExit(f"{url} refused spans: {answer[:500]!r}")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(clients)))
        return time.perf_counter() - start


async def gateway(bootstrap: str, folder: Path, messages: dict[str, list[bytes]], spans: int,
                  clients: int) -> dict[str, float]:  # fmt: skip
    await ensure_topics(bootstrap, Topics.build("gw.", PARTITIONS).all())
    out = {}
    async with running_gateway(bootstrap, folder / "data", project="support-bot",
                               env={"THUMBLINE_TOPIC_PREFIX": "gw."}) as (base, key):  # fmt: skip
        auth = {"X-API-Key": key}
        batched = list(messages["batched"])
        runs = [
            ("/v1/traces (JSON arrays)", "/v1/traces", "application/json", batched, False),
            ("/otlp/v1/traces protobuf", "/otlp/v1/traces", "application/x-protobuf",
             messages["otlp_proto"], True),
            ("/otlp/v1/traces JSON", "/otlp/v1/traces", "application/json",
             messages["otlp_json"], True),
        ]  # fmt: skip
        for label, path, media, bodies, otlp in runs:
            seconds = await post_all(f"{base}{path}", {**auth, "Content-Type": media}, bodies,
                                     clients, otlp)  # fmt: skip
            out[label] = spans / seconds
    return out


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    messages = make_spans(args.traces, args.spans_per_request)
    spans = int(messages.pop("spans")[0])
    print(f"# {spans} spans, {len(messages['otlp_proto'])} OTLP requests of up to "
          f"{args.spans_per_request}; made in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)  # fmt: skip
    staged = stage(messages, spans)
    with tempfile.TemporaryDirectory() as tmp, embedded_broker("memory", Path(tmp)) as broker:
        e2e = await end_to_end(broker.bootstrap, messages, spans, args.budget)
        served = await gateway(broker.bootstrap, Path(tmp), messages, spans, args.clients)
    print(
        f"\n## OpenTelemetry in ({datetime.now(UTC):%Y-%m-%d}, commit {git_commit()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})"
    )
    print(
        f"\n{spans} spans ({spans // 2} traces of a root and a GenAI chat span, with content), "
        f"requests of {args.spans_per_request} spans.\n"
    )
    print("| input | stage (key_by_trace), spans/s | ratio | end to end, spans/s | ratio |")
    print("|---|---|---|---|---|")
    for name in INPUTS:
        run = e2e[name]
        rate = run["rows"] / run["seconds"]
        base = e2e["batched"]["rows"] / e2e["batched"]["seconds"]
        check = "" if run["rows"] >= spans else f" (only {run['rows']} rows)"
        print(
            f"| {name} | {staged[name]:,.0f} | {staged[name] / staged['batched']:.2f}x | "
            f"{rate:,.0f}{check} | {rate / base:.2f}x |"
        )
    print(f"\n| gateway ({args.clients} clients) | spans/s acknowledged | ratio |")
    print("|---|---|---|")
    first = next(iter(served.values()))
    for label, rate in served.items():
        print(f"| {label} | {rate:,.0f} | {rate / first:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per stream run")
    asyncio.run(main(parser.parse_args()))
