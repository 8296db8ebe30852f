"""Faults are waited out, not fatal: a stalled broker, a store outage, a failing join helper.

Each scenario runs its own `thumbline up` and must end with nothing lost or
doubled: every event acknowledged to a client (a 202 from the gateway, or
Kafka's acknowledgement to the load generator) is in `feedback` once, and
every rate window written equals what `feedback FINAL` says for it: base and
sliding windows, per model and per capability (2 s, 10 s and 120 s: the
60 s, 5 min and 1 h of production, scaled down to fit a test).
The process stays up throughout, and `/readyz` says what it waits for.

The default run starts the three scenarios at once (a module fixture; each
test waits for its own): together they take about as long as the longest.
The five-minute stall is marked `slow` and runs apart (`.ci/run`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import rate_mismatches, sql_rows, start_up, stop, worker_env
from tests.integration.test_crash import expected, final_counts, settle
from tests.integration.test_join_helpers import helper_inserts, helper_pids
from thumbline.broker import EmbeddedBroker
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadSpec, run_load
from thumbline.schemas import FeedbackEvent
from thumbline.store import STORE_DOWN

STALL = 90.0
LONG_STALL = 300.0
OUTAGE = 120.0
#: 2-second windows, with 10 s and 120 s sliding ones. Rows that come after their window
#: completed (orphans corrected after the join's grace, a helper's replay) are recomputed.
WINDOW, LATENESS = 2, 12
WINDOWS = {
    "THUMBLINE_RATE_WINDOW_SECONDS": str(WINDOW), "THUMBLINE_RATE_SLIDING_SECONDS": "10,120",
    "THUMBLINE_RATE_LATENESS_SECONDS": str(LATENESS),
}  # fmt: skip


# What the scenarios observe ----------------------------------------------------------


@dataclass
class Observed:
    """What a scenario saw; its test asserts on it."""

    alive_during: bool = False
    alive_after: bool = False
    ready_during: list[tuple[int, str]] = field(default_factory=list)
    ready_after: tuple[int, str] = (0, "")
    want: dict[str, int] = field(default_factory=dict)
    got: dict[str, int] = field(default_factory=dict)
    windows: tuple[int, list[str]] = (0, [])
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


async def readyz(base: str) -> tuple[int, str]:
    """/readyz's status and its reasons (or the connection error)."""
    try:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{base}/readyz") as r:
            body = await r.json()
            return r.status, str(body.get("error") or body.get("status"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, repr(exc)


async def closed_windows_agree(
    thumbline_bin: str, env: dict[str, str], loaded_until: float, timeout: float = 60.0
) -> tuple[int, list[str]]:
    """How many rate windows were checked against `feedback FINAL`, and what differs:
    once nothing does, or ``timeout`` passed (late rows are recomputed a moment after
    they are stored). Windows are complete once the watermark has passed the load."""
    await asyncio.sleep(max(0.0, loaded_until + WINDOW + LATENESS + 1 - time.time()))

    def run_query(sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in sql_rows(thumbline_bin, env, sql)]

    deadline = time.monotonic() + timeout
    while True:
        checked, problems = await asyncio.to_thread(
            rate_mismatches, run_query, "thumbline", window=WINDOW, where="1"
        )
        if not problems or time.monotonic() > deadline:
            return checked, problems
        await asyncio.sleep(1.0)


async def watch(seconds: float, base: str, up: Any, observed: Observed, every: float = 3.0) -> None:
    """Poll /readyz for ``seconds``; note whether the process lived through them."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        observed.ready_during.append(await readyz(base))
        await asyncio.sleep(every)
    observed.alive_during = up.proc.poll() is None


# A gateway under load ----------------------------------------------------------------


class GatewayLoad:
    """Clients of the gateway. Each posts a batch and, on anything but a 202, posts the
    same batch again a second later (as a 503's Retry-After tells), then the next.

    ``sent`` holds every event id built, and each batch ends with a 202: after the
    load, every one of them is acknowledged, whatever happened meanwhile."""

    def __init__(self, base: str, run_id: str, *, clients: int = 3, batch: int = 20) -> None:
        self.base, self.run_id, self.clients, self.batch = base, run_id, clients, batch
        self.sent: set[str] = set()
        self.statuses: dict[Any, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._client(i, stop) for i in range(self.clients)))

    async def _client(self, index: int, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for n in itertools.count():
                if stop.is_set():
                    return
                traces = [
                    {"trace_id": f"{self.run_id}-t{index}-{n}-{j}", "model": f"m{j % 3}"}
                    for j in range(0, self.batch, 2)
                ]  # half the feedback has a trace (joined), half has none (orphans)
                feedback = [
                    {"event_id": f"{self.run_id}-{index}-{n}-{j}",
                     "trace_id": f"{self.run_id}-t{index}-{n}-{j}",
                     "label": "bad" if j % 4 == 0 else "good"}
                    for j in range(self.batch)
                ]  # fmt: skip
                await self._post(http, "/v1/traces", traces)
                self.sent.update(e["event_id"] for e in feedback)
                await self._post(http, "/v1/feedback", feedback)
                await asyncio.sleep(0.2)

    async def _post(self, http: aiohttp.ClientSession, path: str, body: list[dict]) -> None:
        while True:
            try:
                async with http.post(self.base + path, data=orjson.dumps(body)) as r:
                    status: Any = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 202:
                return
            await asyncio.sleep(1.0)


def stored_events(thumbline_bin: str, env: dict[str, str]) -> dict[str, int]:
    [row] = sql_rows(
        thumbline_bin, env,
        "SELECT count() AS feedback, uniqExact(event_id) AS distinct_events "
        "FROM thumbline.feedback FINAL",
    )  # fmt: skip
    return {k: int(v) for k, v in row.items()}


# The scenarios -----------------------------------------------------------------------


async def broker_stall(
    thumbline_bin: str, clean_env: dict[str, str], tmp: Path, seconds: float
) -> Observed:
    """`thumbline up` on a broker of its own, under gateway load; the broker is paused
    (SIGSTOP: its sockets stay open and every request hangs) for ``seconds``."""
    observed, began = Observed(), time.monotonic()
    broker = EmbeddedBroker(log_path=tmp / "broker.log").start()
    up, paused = None, False
    try:
        env = await worker_env(
            broker, clean_env, tmp, "stall", THUMBLINE_GATEWAY_ACK_TIMEOUT_SECONDS="3", **WINDOWS
        )
        up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data", log=tmp / "up.log")
        assert up.info.gateway_url and broker.pid is not None
        load, stop_load = GatewayLoad(up.info.gateway_url, unique("st")), asyncio.Event()
        loading = asyncio.create_task(load.run(stop_load))
        await asyncio.sleep(6)
        os.kill(broker.pid, signal.SIGSTOP)
        paused = True
        await watch(seconds, up.info.gateway_url, up, observed)
        os.kill(broker.pid, signal.SIGCONT)
        paused = False
        if not observed.alive_during:
            return observed  # the test says so (the load would wait for it forever)
        await asyncio.sleep(6)  # the load goes on after the stall
        stop_load.set()
        await asyncio.wait_for(loading, 120)
        loaded_until = time.time()
        observed.notes["statuses"] = load.statuses
        observed.want = {"feedback": len(load.sent), "distinct_events": len(load.sent)}
        observed.got = await settle(
            lambda: stored_events(thumbline_bin, env), observed.want, timeout=120
        )
        observed.windows = await closed_windows_agree(thumbline_bin, env, loaded_until)
        observed.ready_after = await readyz(up.info.gateway_url)
        observed.alive_after = up.proc.poll() is None
    finally:
        if paused and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        if up is not None:
            await asyncio.to_thread(stop, up)
        await asyncio.to_thread(broker.stop)
    observed.seconds = time.monotonic() - began
    return observed


async def store_outage(
    broker: Any, thumbline_bin: str, clean_env: dict[str, str], tmp: Path, seconds: float
) -> Observed:
    """`thumbline up` while a load generator publishes to Kafka; every store call of the
    process fails for ``seconds``, as with a ClickHouse that does not answer (the fault
    switch of THUMBLINE_FAULT_DIR, under the store client: no code path is skipped)."""
    observed, began = Observed(), time.monotonic()
    faults = tmp / "faults"
    faults.mkdir()
    env = await worker_env(
        broker, clean_env, tmp, "storedown", THUMBLINE_FAULT_DIR=str(faults), **WINDOWS
    )
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data", log=tmp / "up.log")
    try:
        assert up.info.gateway_url
        spec = LoadSpec(
            rate=150, duration=seconds + 15, early_share=0.15, orphan_share=0.05, seed=41,
            run_id=unique("so"),
        )  # fmt: skip
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
        ) as fb:
            loading = asyncio.create_task(run_load(fb, spec))
            await asyncio.sleep(6)
            (faults / STORE_DOWN).touch()
            try:
                await watch(seconds, up.info.gateway_url, up, observed)
            finally:
                (faults / STORE_DOWN).unlink(missing_ok=True)
            if not observed.alive_during:
                loading.cancel()
                return observed  # the test says so
            report = await loading
            loaded_until = time.time()
        observed.want = expected(report)
        observed.got = await settle(lambda: final_counts(thumbline_bin, env), observed.want, 120)
        observed.windows = await closed_windows_agree(thumbline_bin, env, loaded_until)
        observed.ready_after = await readyz(up.info.gateway_url)
        observed.alive_after = up.proc.poll() is None
    finally:
        await asyncio.to_thread(stop, up)
    observed.seconds = time.monotonic() - began
    return observed


def log_times(path: Path, pattern: str) -> list[float]:
    """Clock times (seconds of the day) of the log lines that match ``pattern``."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if re.search(pattern, line) and re.match(r"\d\d:\d\d:\d\d ", line):
            at = datetime.strptime(line[:8], "%H:%M:%S")  # noqa: DTZ007 (the log's local clock)
            out.append(at.hour * 3600.0 + at.minute * 60 + at.second)
    return out


async def helper_fails(
    broker: Any, thumbline_bin: str, clean_env: dict[str, str], tmp: Path
) -> Observed:
    """Two join processes. First a burst of feedback for tens of thousands of distinct
    unknown traces (each worker looks up MBs of trace ids, the helper through the
    store's owner); then, under load, the helper fails on an error no wait can cure."""
    observed, began = Observed(), time.monotonic()
    faults = tmp / "faults"
    faults.mkdir()
    env = await worker_env(
        broker, clean_env, tmp, "helperfails", THUMBLINE_STREAM_WORKERS="2",
        THUMBLINE_FAULT_DIR=str(faults),
        THUMBLINE_LOG_LEVEL="INFO", **WINDOWS,
    )  # fmt: skip
    log = tmp / "up.log"
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data", log=log)
    helper_log = tmp / "data" / "helper-1.log"
    try:
        [helper] = helper_pids(up.proc.pid)
        for _ in range(60):  # until the helper holds its share of the partitions
            if helper_log.exists() and "join partitions now" in helper_log.read_text():
                break
            await asyncio.sleep(0.5)
        run_id = unique("hf")
        pad = "x" * 100
        burst = [
            FeedbackEvent.parse(
                {"event_id": f"{run_id}-u{i}", "trace_id": f"{run_id}-{pad}-{i}", "label": "bad"}
            )
            for i in range(50_000)
        ]  # about 5.5 MB of trace ids, none known: all become orphans after the grace
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
        ) as fb:
            await fb.send_many(burst)
            burst_counts = {"feedback": 50_000, "distinct_events": 50_000, "orphans": 50_000,
                            "traces": 0, "dead": 0}  # fmt: skip
            observed.notes["burst"] = await settle(
                lambda: final_counts(thumbline_bin, env), burst_counts, timeout=120
            )
            observed.notes["helpers_after_burst"] = helper_pids(up.proc.pid)
            assert up.info.metrics_url
            observed.notes["helper_inserts"] = helper_inserts(up.info.metrics_url)
            spec = LoadSpec(
                rate=400, duration=None, count=8000, early_share=0.15, seed=43,
                run_id=unique("hl"),
            )  # fmt: skip
            loading = asyncio.create_task(run_load(fb, spec))
            await asyncio.sleep(6)  # mid-stream: the helper holds input not yet written
            (faults / f"crash-join-{helper}").touch()
            report = await loading
            loaded_until = time.time()
        want = expected(report)
        observed.want = {k: v + burst_counts[k] for k, v in want.items()}
        observed.got = await settle(lambda: final_counts(thumbline_bin, env), observed.want, 120)
        observed.notes["helper"] = helper
        observed.notes["helpers_after"] = helper_pids(up.proc.pid)
        observed.notes["failed_at"] = log_times(helper_log, "failed on an error that waiting")
        observed.notes["rebalanced_at"] = log_times(log, "the consumer group rebalances")
        observed.windows = await closed_windows_agree(thumbline_bin, env, loaded_until)
        observed.alive_after = up.proc.poll() is None
    finally:
        await asyncio.to_thread(stop, up)
    observed.seconds = time.monotonic() - began
    return observed


# The tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def scenarios(
    request: pytest.FixtureRequest, broker, thumbline_bin, clean_env, tmp_path_factory
) -> AsyncIterator[dict[str, asyncio.Task[Observed]]]:
    """The scenarios of the selected tests, started at once, each in a task."""
    starts = {
        "test_a_broker_stall_under_gateway_load_is_waited_out": lambda: broker_stall(
            thumbline_bin, clean_env, tmp_path_factory.mktemp("stall"), STALL
        ),
        "test_a_store_outage_is_waited_out": lambda: store_outage(
            broker, thumbline_bin, clean_env, tmp_path_factory.mktemp("storedown"), OUTAGE
        ),
        "test_a_failing_helper_leaves_the_group_at_once_and_nothing_is_lost": lambda: helper_fails(
            broker, thumbline_bin, clean_env, tmp_path_factory.mktemp("helper")
        ),
    }
    selected = {item.name for item in request.session.items if item.module is request.module}
    tasks = {name: asyncio.create_task(go()) for name, go in starts.items() if name in selected}
    yield tasks
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


def assert_not_ready(observed: Observed, reason: str) -> None:
    """/readyz said not ready, and why, from a few seconds into the fault to its end
    (the broker is probed every 2 s, with 3 s to answer; polls come every 3 s)."""
    assert observed.ready_during[3:]
    for status, text in observed.ready_during[3:]:
        assert status == 503 and reason in text, (status, text)


def assert_exact(observed: Observed) -> None:
    assert observed.got == observed.want  # nothing lost, nothing doubled
    checked, problems = observed.windows
    assert checked >= 20 and problems == [], problems[:5]  # every window written is exact


@pytest.mark.slow  # over half a minute: .ci/run runs it after the default run
async def test_a_broker_stall_under_gateway_load_is_waited_out(scenarios, request):
    observed = await scenarios[request.node.name]
    assert observed.alive_during and observed.alive_after, "thumbline up exited"
    assert_not_ready(observed, "waiting for Kafka")
    assert observed.ready_after == (200, "ready")
    assert observed.notes["statuses"].get(503, 0) > 0  # the gateway said so meanwhile
    assert_exact(observed)


async def test_a_store_outage_is_waited_out(scenarios, request):
    observed = await scenarios[request.node.name]
    assert observed.alive_during and observed.alive_after, "thumbline up exited"
    assert_not_ready(observed, "waiting for the store")
    assert observed.ready_after == (200, "ready")
    assert_exact(observed)


async def test_a_failing_helper_leaves_the_group_at_once_and_nothing_is_lost(scenarios, request):
    observed = await scenarios[request.node.name]
    helper = observed.notes["helper"]
    # the lookups of MBs of trace ids went through the owner: the helper did not fail
    assert observed.notes["helpers_after_burst"] == [helper]
    assert observed.notes["helper_inserts"] > 0
    # the injected failure: it exited, was started again, and left the group first
    [after] = observed.notes["helpers_after"]
    assert after != helper
    [failed] = observed.notes["failed_at"]
    soon = [t - failed for t in observed.notes["rebalanced_at"] if t >= failed]
    assert soon and soon[0] <= 3  # not after the session timeout (6 s): it left
    assert observed.alive_after
    assert_exact(observed)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_five_minute_broker_stall_is_waited_out(thumbline_bin, clean_env, tmp_path):
    observed = await broker_stall(thumbline_bin, clean_env, tmp_path, LONG_STALL)
    assert observed.alive_during and observed.alive_after, "thumbline up exited"
    assert_not_ready(observed, "waiting for Kafka")
    assert observed.ready_after == (200, "ready")
    assert_exact(observed)
