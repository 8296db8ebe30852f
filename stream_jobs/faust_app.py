"""The Faust app of the stream, tuned for this pipeline and the embedded broker's quirks.

Used by :mod:`thumbline.stream_jobs.app` (one app per worker process): the consumer
group's timings for Tansu, explicit topics, no web server, large fetches that
wait little for data, and a garbage collector that leaves the join's state alone.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

import faust

from thumbline.settings import Settings

#: Longest a consumer's fetch waits for data (see :func:`short_fetch_waits`).
FETCH_MAX_WAIT_MS = 100

#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLDS = (20_000, 10, 10)


def tune_gc() -> None:
    """Collect garbage less often in a stream worker.

    The join allocates a few containers per event and keeps a large, long-lived
    state; at CPython's default thresholds the cyclic collector walked that state
    so often that decoding a batch took 3-4 times as long as with the collector
    off (profiled, see BENCHMARKS.md). Almost nothing the hot path allocates is
    cyclic (reference counting frees it), so collections become rarer, and what
    exists at start (modules, Faust's graph) is frozen out of them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _credentials(settings: Settings) -> Any:
    if not settings.kafka_security_protocol.startswith("SASL"):
        return None
    assert settings.kafka_sasl_password is not None  # noqa: S101 (checked by Settings)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=settings.kafka_kwargs().get("ssl_context"),
    )


def short_fetch_waits() -> None:
    """Make Faust's consumers wait at most ``FETCH_MAX_WAIT_MS`` for data (it fixes 1,500 ms).

    The embedded broker answers a fetch that waits for data when the wait ends,
    not when data comes, so each hop of the stream added up to the whole wait to
    the time from publish to queryable (a probe: median 290 ms, up to 700 ms, a
    hop at 1,500 ms; 22 ms at 100 ms). Faust has no setting for it, so the
    consumer it creates is given ours before it starts (tests/integration/test_key_by_trace.py
    checks that it still takes). An idle partition costs ten fetches a second.
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "thumbline", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start()
        return consumer

    create_worker_consumer.thumbline = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def join_group(settings: Settings, app_id: str | None = None) -> str:
    """The join's consumer group (the Faust app's id): ``app_id``, else
    ``THUMBLINE_STREAM_GROUP``, else ``<prefix>join``."""
    group = app_id or settings.stream_group or f"{settings.topic_prefix}join"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", group)


def faust_dir(settings: Settings, app_id: str | None = None) -> Path:
    """Where the Faust app keeps its files: ``<data dir>/faust/<app id>``.

    Our tables are in memory, so it stays all but empty; left to Faust, it would
    be an ``<app id>-data`` folder in whatever directory the process started in.
    """
    return settings.data_dir / "faust" / join_group(settings, app_id)


def build_faust_app(settings: Settings, bootstrap: str, app_id: str | None = None) -> faust.App:
    """A Faust app tuned for this pipeline (and for the embedded broker's quirks).

    ``app_id`` is the consumer group; default ``<topic prefix>join``. Its folder
    (:func:`faust_dir`) is made here: Faust makes only the last level.
    """
    short_fetch_waits()
    datadir = faust_dir(settings, app_id)
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        join_group(settings, app_id),
        datadir=str(datadir),
        broker=f"kafka://{bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",  # exactly_once needs transactions
        # Tansu holds a group's first join for half the session timeout.
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=0.5,
        topic_allow_declare=False,  # thumbline creates topics with their partition counts
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_acks=-1,
        stream_buffer_maxsize=max(4096, settings.stream_batch_size * 2),
        consumer_max_fetch_size=8 * 1024 * 1024,
        # Feedback waiting for its trace is held unacknowledged on purpose; do not
        # wait for it to drain on stop or rebalance (it is replayed instead).
        stream_wait_empty=False,
    )
