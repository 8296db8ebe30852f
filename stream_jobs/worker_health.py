"""worker_health: what a stream worker reports about itself, and how it stops when things fail.

:class:`thumbline.stream_jobs.app.StreamApp` runs these beside its agents: a
probe of the broker, so that readiness says when it does not answer even with no
input; the consumer lag per topic, for Prometheus; for a worker that failed,
leaving the consumer group at once; and at stop, a store or broker that does not
answer leaves what waits for it unwritten, to be replayed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError

from thumbline.metrics import Metrics
from thumbline.outages import KAFKA, WaitAborted, Waits
from thumbline.stream_jobs.key_by_trace import KeyByTrace
from thumbline.stream_jobs.sink import SinkUnavailable

logger = logging.getLogger(__name__)

#: Seconds between two reports of the consumer lag.
LAG_SECONDS = 5.0
#: The broker is probed this often, and has this long to answer (a metadata request).
WATCH_SECONDS = 2.0
PROBE_SECONDS = 3.0
#: A worker that failed waits at most this long for the broker to take its LeaveGroup.
LEAVE_SECONDS = 5.0


async def probe_broker(client: Any, waits: Waits) -> None:
    """Probe the broker through ``client`` (a started producer's) until cancelled, so
    that readiness says when it does not answer even with no input. (The rates need no
    hold through an outage: the join's watermark stops with it, so windows wait.)"""
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                await client.fetch_all_metadata()
        except (TimeoutError, KafkaError) as exc:
            error = exc if str(exc) else TimeoutError(f"no answer within {PROBE_SECONDS:g} s")
            waits.failed(KAFKA, "broker_probe", error)
        else:
            waits.succeeded(KAFKA, "broker_probe")


async def report_lag(
    app: faust.App, *, metrics: Metrics, waits: Waits, router: KeyByTrace | None
) -> None:
    """Set the consumer lag per topic: the Faust app's assignment, and key_by_trace's
    input when it runs here. A partition that moves away meanwhile is skipped."""
    if waits.waiting(KAFKA):
        return  # positions would wait for the broker too
    lag: dict[str, int] = {}
    for tp in app.consumer.assignment():
        try:  # a partition can move away meanwhile; the broker can stall
            async with asyncio.timeout(LAG_SECONDS / 2):
                position = await app.consumer.position(tp)
            # revoked while we waited: aiokafka asserts the partition is still assigned
            highwater = app.consumer.highwater(tp)
        except (TimeoutError, KafkaError, AssertionError):
            continue
        if position is not None and highwater is not None:  # None: just assigned
            behind = max(0, highwater - position)
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
    if router is not None:
        router.sync_metrics()
        lag.update(router.lag())
    for topic, value in lag.items():
        metrics.consumer_lag.labels(topic).set(value)


async def report_route_lag(
    router: Callable[[], KeyByTrace | None], metrics: Metrics | None
) -> None:
    """key_by_trace alone: its lag and counts every ``LAG_SECONDS``, as the Faust app's
    timer does with it, for as long as ``router()`` gives the stage."""
    while router() is not None:
        await asyncio.sleep(LAG_SECONDS)
        stage = router()
        if metrics is not None and stage is not None:
            stage.sync_metrics()
            for topic, value in stage.lag().items():
                metrics.consumer_lag.labels(topic).set(value)


async def leave_group(app: faust.App) -> None:
    """Leave the Faust app's consumer group at once, committing nothing (best effort:
    if the broker does not take it, the session timeout moves the partitions)."""
    # Faust runs aiokafka's consumer in a thread of its own; stopping it there
    # sends LeaveGroup (aiokafka commits nothing on close: auto-commit is off).
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    if thread is None or consumer is None:
        return
    try:
        async with asyncio.timeout(LEAVE_SECONDS):
            await thread.call_thread(consumer.stop)
        logger.info("left the consumer group")
    except Exception as exc:  # noqa: BLE001 (leaving is best effort: the process exits)
        logger.warning("could not leave the consumer group (%r): the session timeout "
                       "moves the partitions instead", exc)  # fmt: skip


@contextlib.contextmanager
def unless_waiting(what: str) -> Any:
    """At stop, a store or broker that does not answer leaves ``what`` unwritten:
    the input behind it is unacknowledged and replayed at the next start."""
    try:
        yield
    except (WaitAborted, SinkUnavailable) as exc:
        logger.warning("stopped without writing %s (%s): replayed at the next start", what, exc)
