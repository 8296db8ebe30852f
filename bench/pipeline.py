"""End-to-end pipeline benchmark: pre-filled topics to rows queryable in ClickHouse.

The parent starts the embedded broker and fills the feedback and traces topics
once (N feedback events, each with its trace event, sent in batches by the
SDK). Each variant then runs in its own process, with its own chDB store and
consumer group, on the same data, until ``count() FINAL`` of the feedback
table equals N (checked exactly) or its time budget runs out. Two rates: rows
over the time from the call that starts its stream app (Faust's group join and
the first micro-batch included), and rows over the time from the first message
the stream received to the last feedback row written (the processing rate:
start-up and group join excluded, every event's work included). Variants:

- ``thumbline``: the join job of this repository as ``thumbline up`` runs it
  (micro-batches, one ClickHouse lookup per batch, JSON arrays inserted as
  they are published), in one process;
- ``thumbline-2``: the same with ``THUMBLINE_STREAM_WORKERS=2``: a join
  helper process takes half the partitions and writes through the store
  owner's loopback endpoint (the second core);
- ``per_event``: the straightforward faust-streaming implementation of the
  same join as a baseline: one event at a time, trace attributes in a Faust
  Table, pending feedback in a dict, rows inserted 1,000 at a time.

With ``--brokers memory durable`` every variant runs once on each embedded
broker (in memory, and durable on a local SeaweedFS), in this order, each on
its own broker: the fill rate (the SDK producing with ``acks=all``) and the
stream's rate (consuming, committing) show what durability costs.

    python bench/pipeline.py --feedback 50000 --baseline-feedback 50000 --budget 150
    python bench/pipeline.py --variants thumbline --brokers memory durable --feedback 50000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import STORAGES, embedded_broker, git_commit  # bench/ is on sys.path as a script

from producers import FeedbackProducer
from producers.loadgen import LoadGenerator, LoadSpec
from schemas import Topics
from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.settings import load_settings
from thumbline.store import apply_migrations, open_client

PARTITIONS = 8


async def fill(bootstrap: str, prefix: str, n: int, early: float) -> None:
    gen = LoadGenerator(LoadSpec(seed=42, run_id=prefix.strip("."), comment_share=0.3))
    async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as fb:
        for start in range(0, n, 5000):
            batch: list = []
            late: list = []
            for _ in range(min(5000, n - start)):
                trace, feedback, _ = gen.pair(0.0)
                (late if gen.rng.random() < early else batch).append(trace)
                batch.append(feedback)
            await fb.send_many(batch + late)


def rows(client, db: str, *, final: bool = True) -> int:
    final_ = " FINAL" if final else ""
    return int(client.query(f"SELECT count() FROM {db}.feedback{final_}").result_rows[0][0])


async def wait_rows(client, db: str, n: int, started: float, budget: float) -> dict:
    """Time to all N rows (or the rows written when ``budget`` seconds run out).

    ``total_seconds`` runs from ``started`` (the stream app's start, group join
    included); ``seconds`` from the first message the stream received to the
    last feedback row's own ``inserted_at``: polling from the loop the stream
    app runs on would be delayed by the work it measures.
    """
    count = 0
    while time.perf_counter() - started <= budget:
        # In a thread, cheap count() first: a blocking FINAL every few ms on the
        # loop the stream runs on would slow down the work it measures.
        if await asyncio.to_thread(rows, client, db, final=False) >= n:
            count = await asyncio.to_thread(rows, client, db)
            if count >= n:
                break
        await asyncio.sleep(0.1)
    else:
        count = await asyncio.to_thread(rows, client, db)
    total = time.perf_counter() - started
    last = client.query(f"SELECT max(inserted_at) FROM {db}.feedback").result_rows[0][0]
    # From the first message the stream received (its group join and start-up
    # excluded) to the last feedback row written: every event's processing.
    begun = FIRST_MESSAGE[0] or time.time()
    last_insert = last.replace(tzinfo=UTC).timestamp()
    seconds = max(last_insert - begun, 1e-3) if count else total
    return {
        "rows": count, "complete": count >= n, "total_seconds": total, "seconds": seconds,
        "last_insert": last_insert,
    }  # fmt: skip


def helper_first_input(data_dir: Path, result: dict) -> dict:
    """The processing rate of helpers: from the first input any helper logged."""
    firsts = [
        entry["at"]
        for log in data_dir.glob("helper-*.log")
        for line in log.read_text().splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("msg") == "join: first input"
    ]
    if not firsts or not result["rows"]:
        return {}
    return {"seconds": max(result["last_insert"] - min(firsts), 1e-3)}


FIRST_MESSAGE: list[float | None] = [None]  # wall time the variant's stream got its first input


def note_first_message() -> None:
    if FIRST_MESSAGE[0] is None:
        FIRST_MESSAGE[0] = time.time()


# thumbline's join -----------------------------------------------------------------


async def run_thumbline(
    bootstrap: str, prefix: str, n: int, profile: bool, budget: float, *, workers: int = 1
) -> dict:
    from stream_jobs.app import StreamApp
    from stream_jobs.join_traces import JoinTracesJob
    from thumbline.sqlserver import SqlServer
    from thumbline.workers import JoinHelpers

    handle = JoinTracesJob.handle

    async def timed_handle(self, events):  # type: ignore[no-untyped-def]
        note_first_message()
        await handle(self, events)

    JoinTracesJob.handle = timed_handle  # type: ignore[method-assign]

    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-tl-")), topic_prefix=prefix,
        partitions=PARTITIONS, sink_max_seconds=0.5, stream_workers=workers,
        log_level="INFO", log_format="json",  # helpers log their first input (read below)
    )  # fmt: skip
    client = open_client(settings)
    apply_migrations(client, settings.clickhouse_database)
    app = StreamApp(settings, bootstrap)  # consumer group <prefix>join, as its helpers
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    sql = helpers = None
    if workers > 1:  # as thumbline up starts them
        sql = SqlServer(settings, writer=client).start()
        owner = (sql.url, sql.token)
        helpers = JoinHelpers(settings, bootstrap, owner=owner, log_dir=settings.data_dir).start()
    await app.start()
    result = await wait_rows(client, settings.clickhouse_database, n, started, budget)
    if profiler:
        profiler.disable()
    result["counts"] = dict(app.job.counts) if app.job else {}
    if helpers is not None and sql is not None:
        await helpers.stop()
        sql.stop()
        result.update(helper_first_input(settings.data_dir, result))
    await app.stop()
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        result["profile"] = out.getvalue()
    return result


# the per-event baseline ------------------------------------------------------------


async def run_per_event(bootstrap: str, prefix: str, n: int, profile: bool, budget: float) -> dict:
    import faust
    import orjson

    from schemas import FeedbackEvent, TraceEvent
    from stream_jobs.join_state import JoinStatus, TraceAttributes, enrich
    from stream_jobs.sink import ClickHouseSink

    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-pe-")), topic_prefix=prefix,
        partitions=PARTITIONS,
    )  # fmt: skip
    db = settings.clickhouse_database
    client = open_client(settings)
    apply_migrations(client, db)
    sink = ClickHouseSink(open_client(settings), db, max_rows=1000, max_age=0.5)
    app = faust.App(
        f"{prefix}bench-per-event-{time.time_ns()}", broker=f"kafka://{bootstrap}",
        store="memory://", autodiscover=False, processing_guarantee="at_least_once",
        broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=1,
        topic_disable_leader=True, consumer_auto_offset_reset="earliest", web_enabled=False,
        topic_partitions=PARTITIONS,
    )  # fmt: skip
    traces_table = app.Table("traces", partitions=PARTITIONS)
    pending: dict[str, list[FeedbackEvent]] = {}
    topics = Topics.build(prefix, PARTITIONS)
    source = app.topic(topics.feedback.name, topics.traces.name, value_type=bytes,
                       value_serializer="raw")  # fmt: skip

    def attrs_of(data: dict) -> TraceAttributes:
        attrs = TraceAttributes(data["trace_id"])
        attrs.merge(TraceEvent.model_validate(data), 0.0)
        return attrs

    @app.agent(source)
    async def join(stream):  # one event at a time
        async for event in stream.events():
            note_first_message()
            items = orjson.loads(event.value)
            for item in items if isinstance(items, list) else [items]:
                if event.message.topic == topics.traces.name:
                    trace = TraceEvent.parse(item)
                    traces_table[trace.trace_id] = item
                    waiting = pending.pop(trace.trace_id, [])
                    sink.add_feedback(enrich(f, attrs_of(item), JoinStatus.JOINED) for f in waiting)
                    sink.add_traces([trace])
                else:
                    feedback = FeedbackEvent.parse(item)
                    known = traces_table.get(feedback.trace_id)
                    if known is None:
                        pending.setdefault(feedback.trace_id, []).append(feedback)
                    else:
                        sink.add_feedback([enrich(feedback, attrs_of(known), JoinStatus.JOINED)])
                if sink.due():
                    await asyncio.to_thread(sink.flush)

    @app.timer(0.5)
    async def flush():
        if sink.pending:
            await asyncio.to_thread(sink.flush)

    started = time.perf_counter()
    await app.start()
    result = await wait_rows(client, db, n, started, budget)
    await app.stop()
    return result


VARIANTS = {
    "thumbline": run_thumbline,
    "thumbline-2": functools.partial(run_thumbline, workers=2),
    "per_event": run_per_event,
}


def child(args: argparse.Namespace) -> None:
    if os.environ.get("PE_DEBUG"):
        import logging

        logging.basicConfig(level=logging.INFO)
    result = asyncio.run(
        VARIANTS[args.variant](args.bootstrap, args.prefix, args.expect, args.profile, args.budget)
    )
    # this process and its largest child (a join helper): the sum bounds their peak
    result["peak_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ) / 1024
    sys.stdout.write(json.dumps(result) + "\n")


def run_variant(
    variant: str, bootstrap: str, prefix: str, n: int, profile: bool, budget: float
) -> dict:
    proc = subprocess.run(  # noqa: S603 (this script, our arguments)
        [sys.executable, __file__, "--child", variant, "--bootstrap", bootstrap,
         "--prefix", prefix, "--expect", str(n), "--budget", str(budget)]
        + (["--profile"] if profile else []),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parent(args: argparse.Namespace) -> None:
    commit = git_commit()
    by_broker = {}
    for storage in args.brokers:
        with tempfile.TemporaryDirectory(prefix="bench-broker-") as folder:
            with embedded_broker(storage, Path(folder)) as broker:
                by_broker[storage] = run_on(broker, storage, args)
    if len(by_broker) > 1 and "memory" in by_broker:
        for storage, results in by_broker.items():
            for variant, result in results.items():
                base = by_broker["memory"].get(variant)
                if storage == "memory" or base is None:
                    continue
                ratio = {k: result[k] / base[k] for k in ("fill_per_s", "feedback_per_s",
                                                            "steady_per_s")}  # fmt: skip
                print(
                    f"ratio {storage} / memory, {variant}: fill {ratio['fill_per_s']:.2f}x, "
                    f"{ratio['feedback_per_s']:.2f}x including start-up, "
                    f"{ratio['steady_per_s']:.2f}x from the first message"
                )
    print(f"\n{platform.machine()}, {datetime.now(UTC):%Y-%m-%d}, commit {commit}")


def run_on(broker: EmbeddedBroker, storage: str, args: argparse.Namespace) -> dict:
    """Every variant on one broker; prints a row each, returns their results by variant."""
    results = {}
    # The baseline first: run after the other on the same broker it was much slower.
    runs = (
        ("per_event", args.baseline_feedback),
        ("thumbline", args.feedback),
        ("thumbline-2", args.feedback),
    )
    for variant, n in [(v, n) for v, n in runs if v in args.variants]:
        prefix = f"bench-{variant}-{n}."
        asyncio.run(ensure_topics(broker.bootstrap, Topics.build(prefix, PARTITIONS).all()))
        t = time.perf_counter()
        asyncio.run(fill(broker.bootstrap, prefix, n, args.early))
        fill_s = time.perf_counter() - t
        result = run_variant(variant, broker.bootstrap, prefix, n, args.profile, args.budget)
        done = result["rows"]
        result.update(
            n=n, fill_seconds=fill_s, feedback_per_s=done / result["total_seconds"],
            steady_per_s=done / result["seconds"], fill_per_s=2 * n / fill_s,
        )  # fmt: skip
        results[variant] = result
        print(
            f"| {storage} | {variant} | {2 * n / fill_s:,.0f} | {n:,} | "
            f"{done:,}{'' if result['complete'] else ' (budget out)'} | "
            f"{result['total_seconds']:.1f} | {result['feedback_per_s']:,.0f} | "
            f"{2 * result['feedback_per_s']:,.0f} | {result['steady_per_s']:,.0f} | "
            f"{result['peak_rss_mb']:.0f} |",
            flush=True,
        )
        if result.get("profile"):
            print(result["profile"])
    base = results.get("per_event")
    for variant, result in results.items():
        if base is not None and variant != "per_event":
            print(
                f"ratio {variant} / per_event ({storage}): "
                f"{result['feedback_per_s'] / base['feedback_per_s']:.1f}x including start-up, "
                f"{result['steady_per_s'] / base['steady_per_s']:.1f}x from the first message"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=40_000)
    parser.add_argument("--baseline-feedback", type=int, default=10_000)
    parser.add_argument("--early", type=float, default=0.1, help="share of traces sent late")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--brokers", nargs="+", default=["memory"], choices=STORAGES,
        help="embedded broker storages to run every variant on, in this order",
    )  # fmt: skip
    parser.add_argument("--child", dest="variant", choices=list(VARIANTS))
    parser.add_argument("--bootstrap")
    parser.add_argument("--prefix")
    parser.add_argument("--expect", type=int)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per variant")
    args = parser.parse_args()
    if args.variant:
        child(args)
    else:
        print(
            "| broker | variant | fill events/s | feedback sent | rows written | seconds incl. "
            "start | feedback/s | events/s | feedback/s from first message | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        parent(args)


if __name__ == "__main__":
    main()
