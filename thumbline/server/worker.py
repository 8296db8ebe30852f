"""``thumbline worker``: the stream, as one of any number of workers in one consumer group.

A worker runs what ``thumbline up`` runs of the stream
(:class:`thumbline.stream_jobs.app.StreamApp`, ``runs="all"``): key_by_trace,
the join and the rates, each on the share of partitions the group gives it.
No worker is special: the join's partitions are split by trace id, the rates'
by project (:func:`thumbline.schemas.rates_partition`), and a worker that
joins, leaves or dies moves partitions with their state (replayed from Kafka,
rebuilt from the store). So workers are started alike, on any machine:

    THUMBLINE_KAFKA_BOOTSTRAP=kafka:9092 \\
    THUMBLINE_CLICKHOUSE_URL=http://thumbline:...@clickhouse:8123 thumbline worker

The store is a ClickHouse server (``THUMBLINE_CLICKHOUSE_URL``), migrated
first by ``thumbline migrate`` (a worker checks and refuses to start behind
it, so that many starting at once never race on DDL). On one machine it may
be the embedded store of a running ``thumbline up``: its owner speaks
ClickHouse's HTTP interface (:mod:`thumbline.chhttp`), so a worker given only
the same ``THUMBLINE_DATA_DIR`` takes the URL from the run file and runs the
very code it runs against a server. ``/metrics``, ``/healthz`` and ``/readyz``
are served on ``THUMBLINE_METRICS_HOST:THUMBLINE_METRICS_PORT``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from thumbline import runfile
from thumbline.errors import ConfigError, StoreError
from thumbline.kafka import ensure_topics
from thumbline.metrics import Metrics, MetricsServer
from thumbline.outages import KAFKA, STORE, Waits
from thumbline.schemas import migrations
from thumbline.schemas.topics import Topics, otlp_topic
from thumbline.settings import Settings, load_settings
from thumbline.store import open_client

logger = logging.getLogger(__name__)


def shared_store(settings: Settings) -> Settings:
    """``settings`` with a store several processes can share: as given for a ClickHouse
    server; for an embedded store, the endpoint of the ``thumbline up`` that owns it.

    Raises:
        ConfigError: nobody owns the embedded store (a worker cannot open a chDB path).
    """
    if not settings.store_is_chdb:
        return settings
    info = runfile.read(settings.run_file)
    url = None if info is None else runfile.endpoint_url(info)
    if url is None:
        raise ConfigError(
            f"a worker needs a store it can share: start `thumbline up` on {settings.data_dir} "
            "first (its embedded store is reached through it), or set THUMBLINE_CLICKHOUSE_URL "
            "to a ClickHouse server"
        )
    return load_settings(clickhouse_url=url)


def check_migrated(settings: Settings) -> None:
    """Refuse to start on a store behind this version's migrations (workers never migrate:
    many starting at once would race on DDL).

    Raises:
        ConfigError: the store is behind; run ``thumbline migrate``.
    """
    db = settings.clickhouse_database
    client = open_client(settings, readonly=True)
    try:
        rows = client.query(
            f"SELECT max(version) FROM {db}.schema_migrations FINAL"  # noqa: S608 (checked identifier)
        ).result_rows
    except Exception as exc:  # noqa: BLE001 (a missing table is the same answer: not migrated)
        if "UNKNOWN_TABLE" not in str(exc) and "UNKNOWN_DATABASE" not in str(exc):
            raise StoreError(f"the store does not answer: {settings.mask(str(exc))}") from None
        rows = [(0,)]
    finally:
        client.close()
    have, want = int(rows[0][0] or 0), max(m.version for m in migrations.load())
    if have < want:
        raise ConfigError(
            f"the store's schema is at migration {have}, this thumbline needs {want}: run "
            "`thumbline migrate` once (with the same THUMBLINE_CLICKHOUSE_URL), then start "
            "the workers"
        )


async def run_worker(
    settings: Settings, bootstrap: str, on_started: Callable[[str | None], None] | None = None
) -> None:
    """Run the stream as one worker of the group until SIGTERM or SIGINT, then flush and stop.

    ``on_started`` is called with the metrics URL (None: off) once the worker runs.

    Raises:
        ConfigError: the store cannot be shared or is not migrated.
    """
    from thumbline.stream_jobs.app import StreamApp  # faust is heavy: imported when it runs

    s = shared_store(settings)
    await asyncio.to_thread(check_migrated, s)
    topics = Topics.build(s.topic_prefix, s.partitions)
    await ensure_topics(bootstrap, topics.all(), replication_factor=s.replication_factor,
                        kafka_kwargs=s.kafka_kwargs())  # fmt: skip
    if s.otlp_topic and s.key_by_trace:
        await ensure_topics(
            bootstrap, (otlp_topic(s.otlp_topic, s.partitions),),
            replication_factor=s.replication_factor, kafka_kwargs=s.kafka_kwargs(),
            check_partitions=False,
        )  # fmt: skip
    metrics = Metrics(CollectorRegistry())
    waits = Waits(metrics, mask=s.mask)
    app = StreamApp(s, bootstrap, metrics=metrics, waits=waits)
    started = False

    def ready() -> str | None:
        if not started:
            return "starting"
        for dependency in (KAFKA, STORE):
            if waits.waiting(dependency):
                return f"waiting for {dependency}"
        return None

    server = None
    if s.metrics_enabled:
        server = MetricsServer(metrics, host=s.metrics_host, port=s.metrics_port, ready=ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        started = True
        logger.info(
            "worker running (pid %d; metrics: %s)", os.getpid(), server.url if server else "off",
            extra={"metrics_url": server.url if server else None, "bootstrap": bootstrap},
        )  # fmt: skip
        if on_started is not None:
            on_started(server.url if server else None)
        failed = asyncio.ensure_future(app.wait_failed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([failed, stopped], return_when=asyncio.FIRST_COMPLETED)
        for wait in (failed, stopped):
            wait.cancel()
        if not stop.is_set():
            # A bug, not an outage (those are waited out): leave the group at once so
            # that the others take the partitions and replay what this one held.
            logger.error("the stream failed on an error that waiting cannot cure (%r): "
                         "leaving the consumer group; start the worker again",
                         failed.result())  # fmt: skip
            await app.abandon()
            raise SystemExit(1)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await app.stop()
        if server is not None:
            server.stop()
