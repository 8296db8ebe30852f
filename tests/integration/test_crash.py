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

import pytest

from producers import FeedbackProducer
from producers.loadgen import LoadReport, LoadSpec, run_load
from schemas import Topics
from tests.conftest import unique
from tests.integration.conftest import gone, run, start_up, stop
from thumbline.kafka import ensure_topics

GRACE = "3"


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
    prefix = f"{unique('crash')}."
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    env = {
        **clean_env,
        "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "THUMBLINE_TOPIC_PREFIX": prefix,
        "THUMBLINE_PARTITIONS": "4",
        "THUMBLINE_JOIN_GRACE_SECONDS": GRACE,
        "THUMBLINE_SINK_MAX_SECONDS": "0.2",
    }
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
