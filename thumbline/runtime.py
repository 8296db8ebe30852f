"""``thumbline up``: everything the pipeline needs, in one process.

Start order: the embedded broker (unless ``THUMBLINE_KAFKA_BOOTSTRAP`` is set),
the topics with their partition counts, the ClickHouse migrations, the stream
jobs (which write to the store, so they run in the process that owns it), and
the SQL endpoint for other processes when the store is an embedded chDB path,
and the join helpers when ``stream_workers`` asks for them (they write through
that endpoint). Then the run file is written so that the CLI finds all of it.
Stop order is the reverse; the broker and the helpers also die with this
process if it is killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from schemas.topics import Topics
from thumbline import runfile
from thumbline.broker import EmbeddedBroker
from thumbline.errors import ConfigError, StreamFailed
from thumbline.files import make_private, private_umask
from thumbline.gateway import GatewayProcess
from thumbline.kafka import ensure_topics
from thumbline.metrics import Metrics, MetricsServer
from thumbline.outages import Waits
from thumbline.settings import Settings
from thumbline.sqlserver import SqlServer
from thumbline.store import AppliedMigration, apply_migrations, open_client
from thumbline.workers import JoinHelpers

if TYPE_CHECKING:
    from stream_jobs.app import StreamApp

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Started:
    """What ``start()`` brought up, for the summary the CLI prints."""

    bootstrap: str
    embedded_broker: bool
    topics: Topics
    created_topics: list[str]
    migrations: list[AppliedMigration]
    store: str
    sql_url: str | None
    metrics_url: str | None = None
    gateway_url: str | None = None
    join_processes: int = 1


def _own_temp_dir(path: Path) -> None:
    """Send temp files to a folder of ours, emptied at start.

    clickhouse-connect writes every chDB insert to a temp file and leaves it
    behind when the process is killed; in our folder they are cleaned up here.
    """
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(path)


def _make_private(settings: Settings) -> None:
    """Close what an older version (or a shell's umask) left readable to other users."""
    roots = [settings.data_dir.resolve()]
    if settings.store_is_chdb:  # THUMBLINE_CLICKHOUSE_URL may put the store elsewhere
        store = Path(settings.store_url.removeprefix("chdb://")).resolve()
        if not store.is_relative_to(roots[0]):
            roots.append(store)
    for root in roots:
        fixed = make_private(root)
        if fixed:
            logger.warning(
                "%d files and folders under %s were readable by other users: now only by "
                "their owner", fixed, root,
            )  # fmt: skip
        else:
            logger.info("every file under %s is readable by its owner only", root)


class Runtime:
    """The processes and endpoints of one ``thumbline up``; ``stop()`` is safe to call twice."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.build(settings.topic_prefix, settings.partitions)
        self._broker: EmbeddedBroker | None = None
        self._client: Client | None = None
        self._sql: SqlServer | None = None
        self._stream: StreamApp | None = None
        self._metrics_server: MetricsServer | None = None
        self._gateway: GatewayProcess | None = None
        self.helpers: JoinHelpers | None = None
        self.metrics = Metrics(CollectorRegistry())
        #: What the stream waits for (Kafka, the store): the gateway's /readyz reads it.
        self.waits = Waits(self.metrics, mask=settings.mask)

    async def start(self) -> Started:
        s = self.settings
        private_umask()  # before anything is created: the store, logs, temp files
        live = runfile.read(s.run_file)
        if live is not None:
            raise ConfigError(
                f"thumbline is already running here (pid {live.pid}, data dir {s.data_dir}); "
                "stop it first, or set THUMBLINE_DATA_DIR to run another"
            )
        s.data_dir.mkdir(parents=True, exist_ok=True)
        _make_private(s)
        _own_temp_dir(s.data_dir / "tmp")
        try:
            if s.kafka_bootstrap is None:
                # Started on this (the main) thread on purpose: PR_SET_PDEATHSIG fires when
                # the thread that spawned the broker exits, and a pool thread may exit early.
                self._broker = EmbeddedBroker(
                    port=s.broker_port, log_path=s.data_dir / "broker.log"
                ).start()
                bootstrap = self._broker.bootstrap
            else:
                bootstrap = s.kafka_bootstrap
            created = await ensure_topics(
                bootstrap,
                self.topics.all(),
                replication_factor=s.replication_factor,
                kafka_kwargs=s.kafka_kwargs(),
            )
            self._client = await asyncio.to_thread(open_client, s)
            applied = await asyncio.to_thread(apply_migrations, self._client, s.clickhouse_database)
            from stream_jobs.app import StreamApp  # faust is heavy: imported when it runs

            if s.metrics_enabled:
                self._metrics_server = MetricsServer(
                    self.metrics, host=s.metrics_host, port=s.metrics_port
                )
            self._stream = StreamApp(s, bootstrap, metrics=self.metrics, waits=self.waits)
            await self._stream.start()
            if s.gateway_enabled:
                self._gateway = await GatewayProcess(
                    s, bootstrap, self.metrics, waits=self.waits
                ).start()
            if s.store_is_chdb:
                self._sql = SqlServer(
                    s, writer=self._client, host=s.sql_host, port=s.sql_port
                ).start()
                if self._gateway is not None:
                    self._sql.on_write = self._gateway.keys.invalidate
                self._sql.on_insert = lambda table: self.metrics.helper_inserts.labels(table).inc()
            if s.stream_workers > 1:
                owner = (self._sql.url, self._sql.token) if self._sql else None
                self.helpers = JoinHelpers(s, bootstrap, owner=owner, log_dir=s.data_dir).start()
            runfile.write(
                s.run_file,
                runfile.RunInfo(
                    pid=os.getpid(),
                    bootstrap=bootstrap,
                    embedded_broker=self._broker is not None,
                    broker_pid=self._broker.pid if self._broker else None,
                    store=s.store_display,
                    sql_url=self._sql.url if self._sql else None,
                    sql_token=self._sql.token if self._sql else None,
                    metrics_url=self._metrics_server.url if self._metrics_server else None,
                    gateway_url=self._gateway.url if self._gateway else None,
                    started_at=datetime.now(UTC).isoformat(),
                ),
            )
        except BaseException:
            await self.stop()
            raise
        return Started(
            bootstrap=bootstrap,
            embedded_broker=self._broker is not None,
            topics=self.topics,
            created_topics=created,
            migrations=applied,
            store=s.store_display,
            sql_url=self._sql.url if self._sql else None,
            metrics_url=self._metrics_server.url if self._metrics_server else None,
            gateway_url=self._gateway.url if self._gateway else None,
            join_processes=s.stream_workers,
        )

    async def stop(self) -> None:
        runfile.remove(self.settings.run_file, os.getpid())
        helpers, self.helpers = self.helpers, None
        if helpers is not None:  # first: they flush through the SQL endpoint
            await helpers.stop()
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            await gateway.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.stop()
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            await asyncio.to_thread(server.stop)
        sql, self._sql = self._sql, None
        if sql is not None:
            await asyncio.to_thread(sql.stop)
        client, self._client = self._client, None
        if client is not None:
            client.close()
        broker, self._broker = self._broker, None
        if broker is not None:
            await asyncio.to_thread(broker.stop)

    async def serve_until_signalled(self) -> None:
        """Block until SIGINT or SIGTERM.

        Raises:
            StreamFailed: the stream met an error that waiting cannot cure (a
                bug; outages of Kafka and the store are waited out); what it held
                is replayed when thumbline up starts again.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if self._stream is not None:
            waits.append(asyncio.ensure_future(self._stream.wait_failed()))
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if waits[0] not in done and self._stream is not None:
                reason = waits[1].result()
                await self._stream.abandon()
                raise StreamFailed(
                    f"the stream stopped on an error that waiting cannot cure: {reason!r}. "
                    "This is a bug: please report it with the traceback in the log above. "
                    "Restart thumbline up: unacknowledged input is replayed, nothing is lost"
                )
        finally:
            for wait in waits:
                wait.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
