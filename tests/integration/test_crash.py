"""No acknowledged event lost, none counted twice: kill -9, restart, ClickHouse outage.

The broker is the session's (it survives); `thumbline up` runs as the worker
and store owner against it, and is killed mid-stream while the load generator
keeps publishing. The final tables must hold exactly what the generator
reports it sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from tests.conftest import unique
from tests.integration.conftest import (
    SPIKE_RULES,
    consume,
    gone,
    rate_windows,
    run,
    sql_rows,
    start_up,
    stop,
    worker_env,
)  # fmt: skip
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadReport, LoadSpec, Spike, run_load


def final_counts(thumbline_bin: str, env: dict[str, str]) -> dict[str, int]:
    result = run(
        thumbline_bin, env, "sql", "-f", "json",
        "SELECT (SELECT count() FROM thumbline.feedback FINAL) AS feedback, "
        "(SELECT uniqExact(event_id) FROM thumbline.feedback) AS distinct_events, "
        "(SELECT countIf(join_status = 'orphan') FROM thumbline.feedback FINAL) AS orphans, "
        "(SELECT count() FROM thumbline.traces FINAL) AS traces, "
        "(SELECT count() FROM thumbline.dead_letters FINAL) AS dead",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {k: int(v) for k, v in json.loads(result.stdout).items()}


async def settle(read, want, timeout: float):
    """Poll ``read()`` until it equals ``want`` or ``timeout`` passes; return the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = read()
        if got == want or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(1.0)


def expected(report: LoadReport) -> dict[str, int]:
    return {
        "feedback": report.feedback,
        "distinct_events": report.feedback,
        "orphans": report.orphans,
        "traces": report.traces,
        "dead": 0,
    }


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_worker_stopped_mid_stream_loses_nothing_and_counts_nothing_twice(
    broker, thumbline_bin, clean_env, tmp_path, how
):
    env = await worker_env(broker, clean_env, tmp_path, "crash")
    prefix = env["THUMBLINE_TOPIC_PREFIX"]
    first = start_up(thumbline_bin, env, tmp_path / "data")
    spec = LoadSpec(
        rate=1500, duration=None, count=9000, early_share=0.15, orphan_share=0.03, seed=11
    )
    async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
        load = asyncio.create_task(run_load(fb, spec))
        await asyncio.sleep(2.5)  # mid-stream: rows are being written
        os.kill(first.proc.pid, how)
        assert gone(first.proc.pid, within=30)
        stop(first)
        second = start_up(thumbline_bin, env, tmp_path / "data")
        try:
            report = await load
            assert report.feedback == 9000 and report.orphans > 0
            want = expected(report)
            got = await settle(lambda: final_counts(thumbline_bin, env), want, timeout=120)
            assert got == want
        finally:
            stop(second)


@pytest.mark.slow  # over half a minute: .ci/run runs it after the default run
async def test_a_worker_killed_mid_spike_fires_once_and_its_windows_match_the_feedback(
    broker, thumbline_bin, clean_env, tmp_path
):
    rules = tmp_path / "rules.toml"
    rules.write_text(SPIKE_RULES)
    env = await worker_env(
        broker, clean_env, tmp_path, "spikecrash",
        THUMBLINE_RATE_WINDOW_SECONDS="2", THUMBLINE_RATE_SLIDING_SECONDS="6",
        THUMBLINE_RATE_LATENESS_SECONDS="3", THUMBLINE_ALERT_RULES=str(rules),
    )  # fmt: skip
    prefix = env["THUMBLINE_TOPIC_PREFIX"]
    first = start_up(thumbline_bin, env, tmp_path / "data")
    spec = LoadSpec(
        rate=150, duration=40, projects=3, environments=1, models=1, capabilities=1,
        bad_share=0.05, early_share=0.0, seed=31, run_id=unique("sc"),
        spike=Spike(start=12, end=26, bad_share=0.7, project="project-0"),
    )  # fmt: skip
    firing = "SELECT alert_id FROM thumbline.alerts FINAL WHERE state = 'firing'"
    async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
        load = asyncio.create_task(run_load(fb, spec))
        for _ in range(60):  # until the spike fires
            await asyncio.sleep(0.5)
            if await asyncio.to_thread(sql_rows, thumbline_bin, env, firing):
                break
        else:
            pytest.fail("the spike never fired before the crash")
        os.kill(first.proc.pid, signal.SIGKILL)
        # the load goes on while no worker runs and while the next one starts
        assert await asyncio.to_thread(gone, first.proc.pid, within=30)
        stop(first)
        second = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
        try:
            report = await load
            resolved = "SELECT alert_id FROM thumbline.alerts FINAL WHERE state = 'resolved'"
            for _ in range(60):
                await asyncio.sleep(0.5)
                if await asyncio.to_thread(sql_rows, thumbline_bin, env, resolved):
                    break
            messages = await consume(broker.bootstrap, [f"{prefix}alerts"], events=2)
            states = [(e["state"], e["project"]) for _, _, events in messages for e in events]
            assert states == [("firing", "project-0"), ("resolved", "project-0")]

            await asyncio.sleep(6)  # every window closed
            horizon = int(time.time()) - 8
            rates, table = rate_windows(thumbline_bin, env, window=2, before=horizon)
            assert report.feedback > 4000 and len(table) > 40
            assert rates == table
        finally:
            stop(second)
