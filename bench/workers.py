"""Worker scaling: the same pre-filled input through 1, 2, 3... `thumbline worker` processes.

On one embedded broker (in memory) the parent fills issue 13's workload once
(:mod:`workload`, batched messages). For each worker count, in this order and
in one invocation, it starts `thumbline up` with ``THUMBLINE_STREAM_ENABLED=false``
(the store's owner: an embedded chDB reached by the workers through its loopback
endpoint) and N ``thumbline worker`` processes in a consumer group of their own,
and waits until the feedback table holds exactly the N rows and the workload's
orphans; then every rate window is checked against the table (:mod:`checks`).
The bar and the floor run first on the same data: the hand-written aiokafka job
and the per-event Faust job (:mod:`baselines`), each a single process.

Rates: feedback rows per second from the workers' start (group joins included)
and from the first input any worker logged to the last row written. The broker,
the store owner and every worker share this machine's cores: the scaling
factor says how much of a second and third core the stream gets here, not what
separate machines give.

    python bench/workers.py --feedback 40000 --workers 1 2 3
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
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# bench/ is on sys.path as a script
from checks import RunSpec, thumbline_rates, wait_rows
from common import embedded_broker, git_commit
from pipeline import fill, reset_stream_topics, run_variant
from workload import PARTITIONS, issue_workload

from thumbline import runfile
from thumbline.children import terminate
from thumbline.sqlclient import OwnerClient

FIRST_INPUT = ("join: first input", "key_by_trace: first input")
THUMBLINE = [sys.executable, "-m", "thumbline.cli"]


def first_input(logs: list[Path]) -> float | None:
    """The earliest first input any worker logged (epoch seconds)."""
    firsts = [
        entry["at"]
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("msg") in FIRST_INPUT
    ]
    return min(firsts) if firsts else None


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A thumbline command, its logs to ``log``."""
    with open(log, "ab") as sink:
        return subprocess.Popen(  # noqa: S603 (our own command)
            [*THUMBLINE, *args], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )  # fmt: skip


async def run_workers(spec: RunSpec, workers: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    env = {
        **os.environ,
        "THUMBLINE_DATA_DIR": str(data), "THUMBLINE_KAFKA_BOOTSTRAP": spec.bootstrap,
        "THUMBLINE_TOPIC_PREFIX": spec.prefix, "THUMBLINE_PARTITIONS": str(PARTITIONS),
        "THUMBLINE_STREAM_GROUP": spec.group, "THUMBLINE_SINK_MAX_SECONDS": "0.5",
        "THUMBLINE_JOIN_GRACE_SECONDS": str(spec.grace), "THUMBLINE_LOG_LEVEL": "INFO",
        "THUMBLINE_LOG_FORMAT": "json", "THUMBLINE_METRICS_PORT": "0",
        "THUMBLINE_GATEWAY_ENABLED": "false",
    }  # fmt: skip
    up = spawn(["up"], {**env, "THUMBLINE_STREAM_ENABLED": "false"}, data / "up.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 90
        while (info := runfile.read(data / "run.json")) is None:
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"thumbline up did not start: {(data / 'up.log').read_text()}")
            await asyncio.sleep(0.2)
        assert info.sql_url and info.sql_token  # noqa: S101 (an embedded store has an owner)
        client = OwnerClient(info.sql_url, info.sql_token)
        logs = [data / f"worker-{n}.log" for n in range(workers)]
        started = time.perf_counter()
        procs += [spawn(["worker"], env, log) for log in logs]
        result = await wait_rows(client, "thumbline", spec.n, spec.orphans, started, spec.budget)
        begun = first_input(logs)
        if begun is not None and result["rows"]:
            result["seconds"] = max(result["last_insert"] - begun, 1e-3)
        result.update(await thumbline_rates(client, "thumbline", 60))
        return result
    finally:
        for proc in procs:
            terminate(proc)
        terminate(up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=40_000, help="feedback events")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--baselines", nargs="*", default=["aiokafka_job", "per_event"])
    parser.add_argument("--grace", type=float, default=2.0, help="join grace, seconds")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()
    commit = git_commit()
    work = issue_workload(args.feedback)
    print(f"workload: {work.feedback:,} feedback, {work.traces:,} traces, {work.orphans:,} "
          f"orphans; {PARTITIONS} partitions", flush=True)  # fmt: skip
    results: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as folder:
        with embedded_broker("memory", Path(folder)) as broker:
            prefix = f"bench-workers-{work.feedback}."
            fill(broker, "batched", prefix, work)

            def spec(name: str) -> RunSpec:
                return RunSpec(
                    bootstrap=broker.bootstrap, prefix=prefix, n=work.feedback,
                    orphans=work.orphans, grace=args.grace, budget=args.budget,
                    group=f"{prefix}{name}-{time.time_ns()}",
                )  # fmt: skip

            for name in args.baselines:
                results.append((name, run_variant(name, spec(name), {})))
                print(f"{name}: done", flush=True)
            for n, count in enumerate(args.workers):
                if n:
                    asyncio.run(reset_stream_topics(broker.bootstrap, prefix))
                result = asyncio.run(run_workers(spec(f"w{count}"), count))
                results.append((f"{count} worker{'s' * (count > 1)}", result))
                print(f"{count} workers: done", flush=True)
    one = next((r for name, r in results if name == "1 worker"), None)
    print("\n| run | feedback rows | seconds incl. start | seconds first input to last row "
          "| feedback/s | x 1 worker | rate windows checked |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in results:
        per_s = r["rows"] / r["seconds"]
        scale = f"{per_s / (one['rows'] / one['seconds']):.2f}x" if one else "-"
        rates = f"{r['rate_rows']:,} ({r['rate_problems']} wrong)" if "rate_rows" in r else "-"
        print(f"| {name} | {r['rows']:,}{'' if r['complete'] else ' (budget out)'} | "
              f"{r['total_seconds']:.1f} | {r['seconds']:.1f} | {per_s:,.0f} | {scale} | "
              f"{rates} |")  # fmt: skip
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, "
          f"{datetime.now(UTC):%Y-%m-%d}, commit {commit}")  # fmt: skip


if __name__ == "__main__":
    main()
