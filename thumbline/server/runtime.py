"""``thumbline up``: everything the pipeline needs, in one process.

Start order: the embedded broker (unless ``THUMBLINE_KAFKA_BOOTSTRAP`` is set;
durable by default: SeaweedFS first, then Tansu on it),
the topics with their partition counts, the ClickHouse migrations, the stream
jobs (which write to the store, so they run in the process that owns it), and
the SQL endpoint for other processes when the store is an embedded chDB path,
and the join helpers when ``stream_workers`` asks for them (they write through
that endpoint). Then the run files are written (``run.json`` in the data dir and
this user's record, :mod:`thumbline.runfile`) so that the CLI finds all of it from
any directory; from the first moment, the data dir's lock tells a command that
``thumbline up`` is starting, so that it waits instead of opening the store.
Stop order is the reverse; the broker, its storage and the helpers also die
with this process if it is killed. While it runs, a durable embedded broker's
process that exits is started again in place (see :meth:`Runtime.serve_until_signalled`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from thumbline import embedded, runfile, score_configs
from thumbline.broker import EmbeddedBroker
from thumbline.chhttp import READER, WRITER
from thumbline.children import LOOPBACK, port_free
from thumbline.errors import BrokerFailed, ConfigError, StoreLocked, StreamFailed
from thumbline.files import make_private, private_umask
from thumbline.kafka import ensure_topics
from thumbline.keys import provision_bootstrap_key
from thumbline.metrics import Metrics, MetricsServer
from thumbline.outages import Waits
from thumbline.schemas.score_configs import ScoreConfig
from thumbline.schemas.topics import Topics, otlp_topic
from thumbline.seaweed import SeaweedS3
from thumbline.server.gateway import GatewayProcess
from thumbline.server.workers import JoinHelpers
from thumbline.settings import Settings
from thumbline.sqlserver import SqlServer
from thumbline.store import AppliedMigration, migrate_store, open_client

if TYPE_CHECKING:
    from thumbline.stream_jobs.app import StreamApp

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
    broker_storage: str | None = None  # the embedded broker's: "durable" or "memory"
    broker_dir: Path | None = None  # where the durable one keeps its data


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
    # SeaweedFS chmods its volumes' .vif files to 0644 in a 0700 folder (thumbline.seaweed):
    # closed here without a warning, as after a kill -9 they may be.
    make_private(settings.broker_dir)
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


def _open_store(settings: Settings, *, patience: float = 10.0) -> Client:
    """The store's writer client. A command that found no ``thumbline up`` a moment before
    this one took its lock may hold the chDB path for a moment: that is waited out."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return open_client(settings)
        except StoreLocked:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _given_up(reason: str) -> str:
    # Logged at once: stopping the stream may take long with its broker gone.
    logger.error("%s; stopping thumbline up", reason)
    return reason


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
        self._run_info: runfile.RunInfo | None = None
        self._lock: int | None = None  # runfile.hold's: the data dir is ours while it is held
        self.metrics = Metrics(CollectorRegistry())
        #: What the stream waits for (Kafka, the store): the gateway's /readyz reads it.
        self.waits = Waits(self.metrics, mask=settings.mask)

    async def start(self) -> Started:
        s = self.settings
        embedded.require(s)  # on a slim install: says so before anything is created
        private_umask()  # before anything is created: the store, logs, temp files
        live = runfile.read(s.run_file)
        if live is not None:
            raise ConfigError(
                f"thumbline is already running here (pid {live.pid}, data dir {s.data_dir}); "
                "stop it first, or set THUMBLINE_DATA_DIR to run another"
            )
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = runfile.hold(s.data_dir)
        if self._lock is None:
            raise ConfigError(
                f"thumbline is already running here (pid {runfile.holder(s.data_dir) or '?'}, "
                f"starting; data dir {s.data_dir}); stop it first, or set THUMBLINE_DATA_DIR "
                "to run another"
            )
        _make_private(s)
        _own_temp_dir(s.data_dir / "tmp")
        try:
            # a bad file fails before anything starts
            configs = score_configs.load_file(s.score_configs) if s.score_configs else []
            if s.kafka_bootstrap is None:
                # Started on this (the main) thread on purpose: PR_SET_PDEATHSIG fires when
                # the thread that spawned the broker exits, and a pool thread may exit early.
                if s.broker_port and not port_free(s.broker_port):
                    raise ConfigError(
                        f"the embedded broker cannot listen on {LOOPBACK}:{s.broker_port}: "
                        "Address already in use; set THUMBLINE_BROKER_PORT (0: any free port)"
                    )
                storage = None
                if s.broker_storage == "durable":
                    storage = SeaweedS3(s.broker_dir, log_path=s.data_dir / "seaweedfs.log")
                self._broker = EmbeddedBroker(
                    port=s.broker_port, log_path=s.data_dir / "broker.log", storage=storage
                ).start(storage_timeout=s.broker_start_timeout_seconds)
                bootstrap = self._broker.bootstrap
            else:
                bootstrap = s.kafka_bootstrap
            created = await ensure_topics(
                bootstrap,
                self.topics.all(),
                replication_factor=s.replication_factor,
                kafka_kwargs=s.kafka_kwargs(),
            )
            if s.otlp_topic and s.key_by_trace:  # the Collector's: created if missing, as it is
                created += await ensure_topics(
                    bootstrap, (otlp_topic(s.otlp_topic, s.partitions),),
                    replication_factor=s.replication_factor, kafka_kwargs=s.kafka_kwargs(),
                    check_partitions=False,
                )  # fmt: skip
            self._client = await asyncio.to_thread(_open_store, s)
            applied = await asyncio.to_thread(migrate_store, self._client, s)
            await asyncio.to_thread(provision_bootstrap_key, self._client, s)
            if configs:  # before the join starts: it reads them at start
                await asyncio.to_thread(self._store_score_configs, configs)
            from thumbline.stream_jobs.app import StreamApp  # faust is heavy: imported when it runs

            if s.metrics_enabled:
                self._metrics_server = MetricsServer(
                    self.metrics, host=s.metrics_host, port=s.metrics_port
                )
            if s.stream_enabled:
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
            owner = (self._sql.url, self._sql.token) if self._sql else None
            helpers = JoinHelpers(s, bootstrap, owner=owner, log_dir=s.data_dir)
            if helpers.count and s.stream_enabled:
                self.helpers = helpers.start()
            self._run_info = runfile.RunInfo(
                pid=os.getpid(),
                bootstrap=bootstrap,
                embedded_broker=self._broker is not None,
                broker_pid=None,  # set by _write_run_file, as after a restart of the broker
                store=s.store_display,
                sql_url=self._sql.url if self._sql else None,
                sql_token=self._sql.token if self._sql else None,
                store_writer_password=self._sql.endpoint.password(WRITER) if self._sql else None,
                store_reader_password=self._sql.endpoint.password(READER) if self._sql else None,
                metrics_url=self._metrics_server.url if self._metrics_server else None,
                gateway_url=self._gateway.url if self._gateway else None,
                started_at=datetime.now(UTC).isoformat(),
                broker_storage=self._broker_storage,
            )
            self._write_run_file()
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
            broker_storage=self._broker_storage,
            broker_dir=s.broker_dir.resolve() if self._broker and self._broker.durable else None,
        )

    def _store_score_configs(self, configs: list[ScoreConfig]) -> None:
        assert self._client is not None  # noqa: S101 (opened first)
        sql = score_configs.client_sql(self._client)
        for config, changed in score_configs.apply_configs(
            sql, self.settings.clickhouse_database, configs
        ):
            logger.info(
                "score config %s of %s: version %d%s", config.name, config.project,
                config.version, " (new)" if changed else "",
            )  # fmt: skip

    def _write_run_file(self) -> None:
        """Write the run file with the broker's current pids (they change when it is restarted)."""
        if self._run_info is None:
            return
        broker = self._broker
        info = dataclasses.replace(
            self._run_info,
            broker_pid=broker.pid if broker else None,
            storage_pid=broker.storage.pid if broker and broker.storage else None,
        )
        runfile.write(self.settings.run_file, info)
        try:
            runfile.register(self.settings.data_dir, info)
        except OSError as exc:  # only commands run elsewhere miss it; they say what to set
            logger.warning(
                "cannot record this thumbline up in %s (%s): commands run in other "
                "directories need THUMBLINE_DATA_DIR=%s", runfile.user_dir(), exc,
                self.settings.data_dir.resolve(),
            )  # fmt: skip

    @property
    def _broker_storage(self) -> str | None:
        if self._broker is None:
            return None
        return "durable" if self._broker.durable else "memory"

    async def stop(self) -> None:
        runfile.unregister(os.getpid())
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
        lock, self._lock = self._lock, None
        if lock is not None:  # last: until here a command waits instead of opening the store
            os.close(lock)

    async def serve_until_signalled(self) -> None:
        """Block until SIGINT or SIGTERM.

        Meanwhile a durable embedded broker is kept up: when SeaweedFS or Tansu
        exits, it is started again in place (until then producers get errors and
        the gateway answers 503, never 202; nothing acknowledged is lost).

        Raises:
            StreamFailed: the stream met an error that waiting cannot cure (a
                bug; outages of Kafka and the store are waited out); what it held
                is replayed when thumbline up starts again.
            BrokerFailed: the embedded broker exited and could not be kept up
                (an in-memory one, or a durable one that kept dying).
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        stream_failed = broker_failed = None
        if self._stream is not None:
            stream_failed = asyncio.ensure_future(self._stream.wait_failed())
            waits.append(stream_failed)
        if self._broker is not None:
            broker_failed = asyncio.ensure_future(self._keep_broker_up(self._broker))
            waits.append(broker_failed)
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if broker_failed in done:
                raise BrokerFailed(broker_failed.result())
            if stream_failed in done and self._stream is not None:
                reason = stream_failed.result()
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

    async def _keep_broker_up(
        self, broker: EmbeddedBroker, *, most: int = 3, within: float = 300.0
    ) -> str:
        """Start the embedded broker's exited processes again; return why it cannot be kept up.

        An in-memory broker is not restarted: its messages and topics are gone,
        and a worker on an empty broker would have it auto-create topics with
        the wrong partition counts. A durable one is, up to ``most`` times in
        ``within`` seconds (a process that keeps dying needs a person).
        """
        restarts: deque[float] = deque()
        while True:
            await asyncio.sleep(0.5)
            dead = broker.exited()
            if dead is None:
                continue
            logs = f"{self.settings.data_dir / 'broker.log'}" + (
                f" and {self.settings.data_dir / 'seaweedfs.log'}" if broker.durable else ""
            )
            if not broker.durable:
                return _given_up(
                    f"{dead} exited; it kept messages in memory, so those not yet in ClickHouse "
                    f"are lost (see {logs}). Restart thumbline up; without --memory the broker "
                    "is durable"
                )
            now = time.monotonic()
            restarts.append(now)
            while restarts and restarts[0] < now - within:
                restarts.popleft()
            if len(restarts) > most:
                return _given_up(
                    f"{dead} exited {len(restarts)} times in {within:.0f}s: see {logs}. "
                    "Nothing acknowledged is lost: fix the cause and restart thumbline up"
                )
            logger.warning(
                "%s exited: starting it again on the same data (until it answers, producers get "
                "errors and the gateway 503; nothing acknowledged is lost)", dead,
            )  # fmt: skip
            try:
                await broker.revive(storage_seconds=self.settings.broker_start_timeout_seconds)
            except BrokerFailed as exc:
                return _given_up(f"{dead} exited and did not start again: {exc}")
            self._write_run_file()
            logger.warning("the embedded broker is back (%s)", broker.bootstrap)
