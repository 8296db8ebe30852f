"""End-to-end pipeline benchmark: pre-filled topics to rows queryable in ClickHouse.

The parent builds one workload (``--workload issue``, the default: issue 13's,
see :mod:`workload`) and, on each embedded broker, fills it once per input form
(``--input batched single``) into a topic prefix of its own. Each variant then
runs in its own process, with its own chDB store and consumer group, on the
same data of each form, until its feedback table holds after ``FINAL`` exactly
the N rows and exactly the workload's orphans (orphans appear after the join
grace, ``--grace``), or its time budget runs out. Two rates: over the time from
the call that starts the stream (group join and first batch included), and
from the first message the stream received to the last feedback row written
(the processing rate). Every variant's rows, orphans and rate windows are
checked (see :mod:`checks`). Variants:

- ``aiokafka_job``: the hand-written aiokafka job (:mod:`baselines`), the bar;
- ``per_event``: the straightforward faust-streaming join (:mod:`baselines`);
- ``thumbline``: the stream of this repository as ``thumbline up`` runs it
  (key_by_trace, join and rates), in one process;
- ``thumbline-direct``: the same with ``THUMBLINE_KEY_BY_TRACE=false``: the
  join reads the input topics itself, one Faust message at a time;
- ``thumbline-route``: the same with ``THUMBLINE_KEY_BY_TRACE_PROCESS=true``:
  key_by_trace in a helper process of its own, the join and rates in the first;
- ``thumbline-2``: the same with ``THUMBLINE_STREAM_WORKERS=2``: a join
  helper process takes half the partitions and writes through the store
  owner's loopback endpoint (the second core).

Between thumbline variants on one prefix the stream's own topics (keyed,
enriched, rates, alerts, dlq) are deleted and created again, so that each
starts from its input alone. ``--env KEY=VALUE`` goes into the thumbline
variants' environment (their ``THUMBLINE_*`` settings).

    python bench/pipeline.py --feedback 50000 --input batched single \\
        --variants aiokafka_job per_event thumbline
    python bench/pipeline.py --variants thumbline --brokers memory durable --feedback 50000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
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

# bench/ is on sys.path as a script
from baselines import run_aiokafka_job, run_per_event
from checks import RunSpec, note_first_message, thumbline_rates, wait_rows
from common import STORAGES, embedded_broker, git_commit
from workload import (
    PARTITIONS,
    Workload,
    fill_batched,
    fill_single,
    issue_workload,
    legacy_workload,
)

from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import load_settings
from thumbline.store import apply_migrations, open_client

#: The order variants run in on each input form: the baselines first.
VARIANTS = (
    "aiokafka_job", "per_event", "thumbline", "thumbline-direct", "thumbline-route", "thumbline-2"
)  # fmt: skip
INPUTS = ("batched", "single")


#: what a helper logs at its first input: the join, or key_by_trace in its own process
FIRST_INPUT = ("join: first input", "key_by_trace: first input")


def helper_first_input(data_dir: Path, result: dict) -> dict:
    """The processing rate of helpers: from the first input any helper logged."""
    firsts = [
        entry["at"]
        for log in data_dir.glob("helper-*.log")
        for line in log.read_text().splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("msg") in FIRST_INPUT
    ]
    if not firsts or not result["rows"]:
        return {}
    return {"seconds": max(result["last_insert"] - min(firsts), 1e-3)}


async def run_thumbline(
    spec: RunSpec, *, workers: int = 1, key_by_trace: bool = True, own_process: bool = False
) -> dict:
    from thumbline.server.workers import JoinHelpers
    from thumbline.sqlserver import SqlServer
    from thumbline.stream_jobs.app import StreamApp
    from thumbline.stream_jobs.join_traces import JoinTracesJob
    from thumbline.stream_jobs.key_by_trace import KeyByTrace

    handle = JoinTracesJob.handle

    async def timed_handle(self, events):  # type: ignore[no-untyped-def]
        note_first_message()
        await handle(self, events)

    JoinTracesJob.handle = timed_handle  # type: ignore[method-assign]
    route = KeyByTrace._route

    async def timed_route(self, fetched):  # type: ignore[no-untyped-def]
        note_first_message()  # the stage reads the input before the join
        await route(self, fetched)

    KeyByTrace._route = timed_route  # type: ignore[method-assign]

    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-tl-")), topic_prefix=spec.prefix,
        partitions=PARTITIONS, sink_max_seconds=0.5, stream_workers=workers,
        join_grace_seconds=spec.grace, key_by_trace=key_by_trace,
        key_by_trace_process=own_process,
        log_level="INFO", log_format="json",  # helpers log their first input (read below)
    )  # fmt: skip
    db = settings.clickhouse_database
    client = open_client(settings)
    apply_migrations(client, db)
    app = StreamApp(settings, spec.bootstrap, app_id=spec.group)
    profiler = cProfile.Profile() if spec.profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    sql = helpers = None
    if workers > 1 or own_process:  # as thumbline up starts them, in the run's own group
        sql = SqlServer(settings, writer=client).start()
        owner = (sql.url, sql.token)
        helpers = JoinHelpers(
            settings, spec.bootstrap, owner=owner, log_dir=settings.data_dir, app_id=spec.group
        ).start()
    await app.start()
    result = await wait_rows(client, db, spec.n, spec.orphans, started, spec.budget)
    if profiler:
        profiler.disable()
    result.update(await thumbline_rates(client, db, settings.rate_window_seconds))
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


async def run_thumbline_2(spec: RunSpec) -> dict:
    return await run_thumbline(spec, workers=2)


async def run_thumbline_route(spec: RunSpec) -> dict:
    return await run_thumbline(spec, own_process=True)


async def run_thumbline_direct(spec: RunSpec) -> dict:
    return await run_thumbline(spec, key_by_trace=False)


RUNNERS = {
    "aiokafka_job": run_aiokafka_job,
    "per_event": run_per_event,
    "thumbline": run_thumbline,
    "thumbline-direct": run_thumbline_direct,
    "thumbline-route": run_thumbline_route,
    "thumbline-2": run_thumbline_2,
}


def child(variant: str, spec: RunSpec) -> None:
    result = asyncio.run(RUNNERS[variant](spec))
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # its largest child (a join helper), if any
    result["helper_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sys.stdout.write(json.dumps(result) + "\n")


def run_variant(variant: str, spec: RunSpec, env: dict[str, str]) -> dict:
    proc = subprocess.run(  # noqa: S603 (this script, our arguments)
        [sys.executable, __file__, "--child", variant, "--spec",
         json.dumps(dataclasses.asdict(spec))],
        capture_output=True, text=True, check=False,
        env={**os.environ, **(env if variant.startswith("thumbline") else {})},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def reset_stream_topics(bootstrap: str, prefix: str) -> None:
    """Delete and create again the topics thumbline's stream writes and reads back, so
    that the next thumbline variant on ``prefix`` sees its input alone."""
    from aiokafka.admin import AIOKafkaAdminClient

    topics = Topics.build(prefix, PARTITIONS)
    own = [topics.keyed, topics.enriched, topics.rates, topics.alerts, topics.dlq]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.delete_topics([t.name for t in own if t.name in existing])
    finally:
        await admin.close()
    await ensure_topics(bootstrap, topics.all())


def fill(broker: EmbeddedBroker, form: str, prefix: str, work: Workload) -> dict:
    asyncio.run(ensure_topics(broker.bootstrap, Topics.build(prefix, PARTITIONS).all()))
    began = time.perf_counter()
    info: dict = {}
    if form == "batched":
        asyncio.run(fill_batched(broker.bootstrap, prefix, work))
    else:
        info = fill_single(broker.bootstrap, prefix, work)
    seconds = time.perf_counter() - began
    events = len(work.events)
    line = f"fill {form}: {events:,} events in {seconds:.1f} s ({events / seconds:,.0f}/s)"
    if info:
        line += (
            f", {info['messages']:,} messages, partition = crc32(key) % {PARTITIONS} for "
            f"{info['messages'] - info['not_crc32']:,}, not thumbline's murmur2 partition "
            f"for {info['off_murmur2']:,} ({info['off_murmur2'] / info['messages']:.0%})"
        )
    print(line, flush=True)
    if info.get("not_crc32"):
        raise RuntimeError(f"confluent-kafka did not partition by CRC32: {info}")
    return {"fill_seconds": seconds, "fill_per_s": events / seconds}


def run_on(broker: EmbeddedBroker, storage: str, work: Workload, args: argparse.Namespace) -> list:
    """Every variant on every input form of one broker; returns one result per run."""
    env = dict(pair.split("=", 1) for pair in args.env)
    results = []
    for form in args.input:
        prefix = f"bench-{form}-{work.feedback}."
        filled = fill(broker, form, prefix, work)
        thumblines = 0
        for variant in [v for v in VARIANTS if v in args.variants]:
            if variant.startswith("thumbline") and thumblines:
                asyncio.run(reset_stream_topics(broker.bootstrap, prefix))
            thumblines += variant.startswith("thumbline")
            spec = RunSpec(
                bootstrap=broker.bootstrap, prefix=prefix, n=work.feedback,
                orphans=work.orphans, grace=args.grace, budget=args.budget,
                group=f"{prefix}{variant}-{time.time_ns()}", profile=args.profile,
            )  # fmt: skip
            result = run_variant(variant, spec, env)
            events = result["rows"] + work.traces * result["rows"] / work.feedback
            result.update(
                filled, broker=storage, input=form, variant=variant,
                feedback_per_s=result["rows"] / result["seconds"],
                events_per_s=events / result["seconds"],
                with_start_per_s=result["rows"] / result["total_seconds"],
            )  # fmt: skip
            results.append(result)
            print(check_line(result, work), flush=True)
            if result.get("profile"):
                print(result["profile"])
    return results


def check_line(r: dict, work: Workload) -> str:
    ok = lambda good: "ok" if good else "WRONG"  # noqa: E731
    line = (
        f"  {r['input']} {r['variant']}: rows {r['rows']:,}/{work.feedback:,} "
        f"{ok(r['rows'] == work.feedback)}, orphans {r['orphans']:,}/{work.orphans:,} "
        f"{ok(r['orphans'] == work.orphans)}, joined {r['joined']:,}/{work.joined:,} "
        f"{ok(r['joined'] == work.joined)} ({r['corrected']:,} of them corrected orphans)"
    )
    if "rate_rows" in r:
        line += (
            f", rate windows {r['rate_rows']:,} checked against a recount: "
            f"{ok(not r['rate_problems'])} ({r['rate_problems']} differ"
            f"{': ' + '; '.join(r['rate_examples']) if r['rate_problems'] else ''})"
        )
    return line + ("" if r["complete"] else " (budget out)")


def report(results: list) -> None:
    print(
        "\n| broker | input | variant | fill events/s | feedback rows | seconds incl. start "
        "| seconds first msg to last row | feedback/s | events/s | peak RSS MB "
        "| x aiokafka_job | x per_event |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        same = {x["variant"]: x for x in results
                if x["broker"] == r["broker"] and x["input"] == r["input"]}  # fmt: skip

        def ratio(base: str, r: dict = r, same: dict = same) -> str:
            b = same.get(base)
            return f"{r['feedback_per_s'] / b['feedback_per_s']:.2f}x" if b else "-"

        rss = f"{r['rss_mb']:.0f}"
        if r["variant"] in ("thumbline-2", "thumbline-route"):
            rss += f" + {r['helper_rss_mb']:.0f}"
        print(
            f"| {r['broker']} | {r['input']} | {r['variant']} | {r['fill_per_s']:,.0f} | "
            f"{r['rows']:,}{'' if r['complete'] else ' (budget out)'} | "
            f"{r['total_seconds']:.1f} | {r['seconds']:.1f} | {r['feedback_per_s']:,.0f} | "
            f"{r['events_per_s']:,.0f} | {rss} | {ratio('aiokafka_job')} | {ratio('per_event')} |"
        )


def parent(args: argparse.Namespace) -> None:
    commit = git_commit()
    if args.workload == "issue":
        work = issue_workload(args.feedback)
    else:
        work = legacy_workload(args.feedback, early=args.early)
    print(
        f"workload {args.workload}: {work.feedback:,} feedback, {work.traces:,} traces, "
        f"{work.orphans:,} orphans, {work.early:,} sent before their trace; grace {args.grace:g} s"
    )
    results = []
    for storage in args.brokers:
        with tempfile.TemporaryDirectory(prefix="bench-broker-") as folder:
            with embedded_broker(storage, Path(folder)) as broker:
                results += run_on(broker, storage, work, args)
    report(results)
    parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nfeedback/s and events/s from each variant's first message to its last row; "
        f"ratios of feedback/s on the same broker and input. Parent (workload, fills) peak "
        f"RSS {parent_rss:.0f} MB.\n{platform.machine()}, {datetime.now(UTC):%Y-%m-%d}, "
        f"commit {commit}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=40_000, help="T: feedback events")
    parser.add_argument("--workload", choices=("issue", "legacy"), default="issue")
    parser.add_argument("--early", type=float, default=0.1, help="legacy: traces sent late")
    parser.add_argument("--input", nargs="+", choices=INPUTS, default=["batched"])
    parser.add_argument("--grace", type=float, default=2.0, help="join grace, seconds")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--brokers", nargs="+", default=["memory"], choices=STORAGES,
        help="embedded broker storages to run every variant on, in this order",
    )  # fmt: skip
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="into the thumbline variants' environment, e.g. THUMBLINE_SOME_SETTING=1",
    )  # fmt: skip
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per variant")
    parser.add_argument("--child", dest="variant", choices=VARIANTS)
    parser.add_argument("--spec", help="a child's RunSpec, as JSON")
    args = parser.parse_args()
    if args.variant:
        child(args.variant, RunSpec(**json.loads(args.spec)))
    else:
        if any("=" not in pair for pair in args.env):
            parser.error("--env takes KEY=VALUE")
        parent(args)


if __name__ == "__main__":
    main()
