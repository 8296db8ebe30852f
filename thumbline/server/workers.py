"""Join helpers: the join in several processes, a core each (``THUMBLINE_STREAM_WORKERS``).

With ``THUMBLINE_KEY_BY_TRACE_PROCESS=true`` one more helper runs
:mod:`thumbline.stream_jobs.key_by_trace` alone (``runs="route"``), so that re-keying
one-event messages takes a core of its own instead of a share of the join's.
It needs no store; everything below about restarts and outages holds for it too.

The join is one Python thread, so one worker uses one core. With
``stream_workers = N > 1`` ``thumbline up`` still runs the join (and the
rates, the store and the endpoints) and starts N - 1 helper processes that run
the join alone (:class:`thumbline.stream_jobs.app.StreamApp` with ``runs="join"``), all
in one consumer group. Faust's assignor splits the join's co-partitioned
topics among all of them and gives ``feedback.enriched`` to ``thumbline up``
alone, so the rates still see every row. A helper reaches
an embedded chDB store through its owner's loopback endpoint
(:class:`thumbline.sqlclient.OwnerClient`) and a ClickHouse server directly.

A helper dies with ``thumbline up`` (even by kill -9: ``PR_SET_PDEATHSIG``),
stops cleanly on SIGTERM (flushes what is complete and commits), waits out
outages of Kafka and the store like the owner (:mod:`thumbline.outages`), and
is started again if it exits on its own. One that fails on an error waiting
cannot cure leaves the consumer group at once (its partitions move to the
others now, not after the session timeout) and exits; one killed is noticed
after the session timeout. Either way its unacknowledged input is replayed by
the others: nothing is lost, and the tables' version keys make the replay
count once.

Run as ``python -m thumbline.server.workers`` by :class:`JoinHelpers` only: it reads
its settings (secrets included) as JSON on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from thumbline import logs
from thumbline.broker import _die_with_parent
from thumbline.files import private_umask
from thumbline.settings import Settings, load_settings

logger = logging.getLogger(__name__)

#: A helper that exits sooner than this after its start is restarted only after it.
RESTART_SECONDS = 5.0
#: How long a helper may take to flush and commit on SIGTERM before it is killed.
STOP_SECONDS = 15.0


class JoinHelpers:
    """``stream_workers - 1`` helper processes, watched and restarted.

    Call ``start()`` from the main thread (the kernel kills a helper when the
    thread that started it exits) with a running loop; ``stop()`` is safe to
    call twice.

    Args:
        settings: the settings of ``thumbline up``; each helper gets the same.
        bootstrap: the Kafka bootstrap servers.
        owner: the SQL endpoint (url, token) of the embedded store's owner; None
            for a ClickHouse server, which helpers reach directly.
        log_dir: where each helper writes its log (``helper-<n>.log``).
        app_id: the owner's consumer group, when not the default ``<prefix>join``.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        owner: tuple[str, str] | None,
        log_dir: Path,
        app_id: str | None = None,
    ) -> None:
        #: what each helper runs: the join, and key_by_trace when it has a process of its own
        self.roles: list[str] = ["join"] * (settings.stream_workers - 1)
        if settings.key_by_trace and settings.key_by_trace_process:
            self.roles.append("route")
        self.count = len(self.roles)
        self._spec = {
            "settings": orjson.Fragment(settings.to_json()),
            "bootstrap": bootstrap,
            "owner": list(owner) if owner else None,
            "app_id": app_id,
        }
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self._started_at = [0.0] * self.count
        self._logs: list[IO[bytes] | None] = [None] * self.count
        self._watch: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def start(self) -> JoinHelpers:
        for index in range(self.count):
            self._spawn(index)
        self._watch = asyncio.get_running_loop().create_task(self._supervise())
        return self

    def _spawn(self, index: int) -> None:
        log = self._logs[index]
        if log is None:
            log = self._logs[index] = (self._log_dir / f"helper-{index + 1}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-m", "thumbline.server.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only, as for the broker)
        )
        assert proc.stdin is not None  # noqa: S101 (stdin=PIPE)
        role = {"index": index + 1, "runs": self.roles[index]}
        proc.stdin.write(orjson.dumps({**self._spec, **role}))
        proc.stdin.close()
        self._procs[index] = proc
        self._started_at[index] = time.monotonic()
        logger.info("helper %d (%s) started (pid %d)", index + 1, self.roles[index], proc.pid)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for index, proc in enumerate(self._procs):
                if proc is None or proc.poll() is None:
                    continue
                if time.monotonic() - self._started_at[index] < RESTART_SECONDS:
                    continue  # it died at once: wait before trying again
                logger.warning(
                    "join helper %d (pid %d) exited with %s; starting it again (its log: %s)",
                    index + 1, proc.pid, proc.returncode,
                    self._log_dir / f"helper-{index + 1}.log",
                )  # fmt: skip
                self.restarts += 1
                self._spawn(index)

    async def stop(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        procs = [p for p in self._procs if p is not None]
        self._procs = [None] * self.count
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("join helper pid %d did not stop in time; killed", proc.pid)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for index, log in enumerate(self._logs):
            if log is not None:
                log.close()
                self._logs[index] = None


def metrics_port(settings: Settings, index: int) -> int:
    """Helper ``index`` (from 1) serves /metrics on the port after the owner's (+ index)."""
    return settings.metrics_port + index if settings.metrics_port else 0


async def run_helper(
    settings: Settings,
    bootstrap: str,
    owner: tuple[str, str] | None,
    index: int = 1,
    runs: Literal["join", "route"] = "join",
    app_id: str | None = None,
) -> None:
    """Run the join (or key_by_trace) alone until SIGTERM or SIGINT, then flush and stop."""
    from prometheus_client import CollectorRegistry

    from thumbline.metrics import Metrics, MetricsServer
    from thumbline.sqlclient import OwnerClient
    from thumbline.stream_jobs.app import StreamApp

    store: Any = None
    if owner is not None:
        url, token = owner
        store = lambda readonly: OwnerClient(url, token)  # noqa: E731
    elif settings.store_is_chdb and runs == "join":
        raise SystemExit("a join helper needs the store owner's endpoint for a chDB store")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = server = None
    if settings.metrics_enabled:
        metrics = Metrics(CollectorRegistry())
        port = metrics_port(settings, index)
        server = MetricsServer(metrics, host=settings.metrics_host, port=port)
    app = StreamApp(settings, bootstrap, app_id=app_id, runs=runs, store=store, metrics=metrics)
    try:
        await app.start()
        logger.info(
            "helper %d (%s) running (metrics: %s)", index, runs, server.url if server else "off",
            extra={"metrics_url": server.url if server else None},
        )  # fmt: skip
        failed = asyncio.ensure_future(app.wait_failed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([failed, stopped], return_when=asyncio.FIRST_COMPLETED)
        for wait in (failed, stopped):
            wait.cancel()
        if not stop.is_set():
            # A bug, not an outage (those are waited out). Leave the group first, so
            # that the other workers take the partitions at once and replay what this
            # one held; then exit without flushing or committing anything more.
            logger.error(
                "the %s failed on an error that waiting cannot cure (%r): leaving the "
                "consumer group and exiting, to be started again", runs, failed.result(),
            )  # fmt: skip
            await app.abandon()
            logging.shutdown()
            os._exit(1)
    finally:
        await app.stop()
        if server is not None:
            server.stop()


def main() -> None:
    private_umask()  # inherited from thumbline up already; said again for a direct start
    spec = orjson.loads(sys.stdin.buffer.read())
    settings = load_settings(**spec["settings"])
    logs.configure(settings.log_level, settings.log_format)
    owner = tuple(spec["owner"]) if spec["owner"] else None
    runs = spec.get("runs", "join")
    asyncio.run(
        run_helper(
            settings, spec["bootstrap"], owner, spec.get("index", 1), runs, spec.get("app_id")
        )
    )


if __name__ == "__main__":
    main()
