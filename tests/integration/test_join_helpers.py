"""Helpers: the join in two processes (THUMBLINE_STREAM_WORKERS=2), one store owner; and
key_by_trace in a process of its own (THUMBLINE_KEY_BY_TRACE_PROCESS=true).

`thumbline up` runs the join and the rates and owns the embedded store; its
helper runs the join alone in the same consumer group and writes through the
owner. The tables must hold exactly what the load generator sent, the rate
windows must match the feedback table, also when the helper is killed -9
mid-stream, and no helper may outlive `thumbline up`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

from tests.integration.conftest import gone, rate_windows, start_up, stop, worker_env
from tests.integration.test_crash import expected, final_counts, settle
from tests.integration.test_key_by_trace import send_one_by_one
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadSpec, run_load
from thumbline.schemas import Topics


def helper_pids(parent: int) -> list[int]:
    """The join helpers `thumbline up` (pid ``parent``) runs now."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline") as f:
                command = f.read()
        except (OSError, IndexError):
            continue
        if ppid == parent and "thumbline.server.workers" in command:
            pids.append(int(entry))
    return pids


def helper_inserts(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("thumbline_helper_inserts_total{")
    )


async def windows_settled(thumbline_bin, env, before: int, timeout: float = 40.0):
    """The rate windows and the feedback table's, once they agree or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        rates, table = rate_windows(thumbline_bin, env, window=2, before=before)
        if rates == table or time.monotonic() > deadline:
            return rates, table
        await asyncio.sleep(1.0)


async def holds_partitions(log, timeout: float = 60.0) -> None:
    """Wait until the helper logging to ``log`` (at INFO) holds join partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if any("join partitions now [" in x and "now []" not in x for x in text.splitlines()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the helper holds no partition after {timeout:g} s")


async def helpers_env(broker, clean_env, tmp_path, name, lateness="3", **extra):
    return await worker_env(
        broker, clean_env, tmp_path, name, THUMBLINE_STREAM_WORKERS="2",
        THUMBLINE_RATE_WINDOW_SECONDS="2", THUMBLINE_RATE_SLIDING_SECONDS="",
        THUMBLINE_RATE_LATENESS_SECONDS=lateness, **extra,
    )  # fmt: skip


async def test_two_join_processes_share_the_work_and_every_row_lands_once(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await helpers_env(broker, clean_env, tmp_path, "helpers", THUMBLINE_LOG_LEVEL="INFO")
    up = start_up(thumbline_bin, env, tmp_path / "data", log=tmp_path / "up.log")
    try:
        helpers = helper_pids(up.proc.pid)
        assert len(helpers) == 1
        # the load takes 4 s: it starts once the helper holds its share, or up alone does it all
        await holds_partitions(tmp_path / "data" / "helper-1.log")
        spec = LoadSpec(rate=1500, duration=None, count=6000, early_share=0.15, seed=5)
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
        ) as fb:
            report = await run_load(fb, spec)
        want = expected(report)
        assert await settle(lambda: final_counts(thumbline_bin, env), want, timeout=90) == want
        assert up.info.metrics_url and helper_inserts(up.info.metrics_url) > 0  # it did write
        before = int(time.time()) - 2
        # the rebalance held the windows: they close once the input is idle (no more load)
        rates, table = await windows_settled(thumbline_bin, env, before)
        assert len(table) >= 3 and rates == table  # the rates saw the helper's rows too
    finally:
        stop(up)
    assert all(gone(pid, within=20) for pid in helpers)  # stopped with thumbline up


async def test_a_helper_killed_mid_stream_is_replaced_and_nothing_is_lost_or_counted_twice(
    broker, thumbline_bin, clean_env, tmp_path
):
    # A killed helper is noticed after the session timeout (6 s): windows still
    # open then take its replay, so the lateness must cover that gap.
    env = await helpers_env(broker, clean_env, tmp_path, "helperkill", lateness="12")
    up = start_up(thumbline_bin, env, tmp_path / "data")
    try:
        [first] = helper_pids(up.proc.pid)
        spec = LoadSpec(rate=500, duration=None, count=12000, early_share=0.15, seed=7)
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
        ) as fb:
            load = asyncio.create_task(run_load(fb, spec))
            await asyncio.sleep(8)  # mid-stream: the helper holds half the partitions
            os.kill(first, signal.SIGKILL)
            report = await load
        want = expected(report)
        assert await settle(lambda: final_counts(thumbline_bin, env), want, timeout=120) == want
        now = helper_pids(up.proc.pid)
        assert len(now) == 1 and first not in now  # started again
        rates, table = await windows_settled(thumbline_bin, env, int(time.time()) - 2, 60)
        assert len(table) >= 10 and rates == table  # the replay counted once, none late
        os.kill(up.proc.pid, signal.SIGKILL)  # the owner dies: its helper dies with it
        assert gone(up.proc.pid, within=20)
        assert all(gone(pid, within=20) for pid in now)
    finally:
        stop(up)


async def test_key_by_trace_in_a_process_of_its_own_routes_the_input_and_survives_kill_9(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(
        broker, clean_env, tmp_path, "kbtproc", THUMBLINE_KEY_BY_TRACE_PROCESS="true"
    )
    prefix = env["THUMBLINE_TOPIC_PREFIX"]
    up = start_up(thumbline_bin, env, tmp_path / "data")
    try:
        [router] = helper_pids(up.proc.pid)
        os.kill(router, signal.SIGSTOP)  # the stage paused: nothing reaches the join
        ids = [f"{prefix}t{i}" for i in range(2_000)]
        await send_one_by_one(broker.bootstrap, Topics.build(prefix, 4), ids)
        await asyncio.sleep(3)
        assert final_counts(thumbline_bin, env)["traces"] == 0  # up does not route itself
        os.kill(router, signal.SIGKILL)  # killed holding all of it, unrouted
        want = {"feedback": 2_000, "distinct_events": 2_000, "orphans": 0, "traces": 2_000,
                "dead": 0}  # fmt: skip
        assert await settle(lambda: final_counts(thumbline_bin, env), want, timeout=90) == want
        [again] = helper_pids(up.proc.pid)
        assert again != router  # started again, and it routed everything once
    finally:
        stop(up)
    assert gone(again, within=20)
