"""The stream: one Faust app, every topic, agent and timer visible from here.

    feedback, traces ──► key_by_trace (aiokafka: getmany, re-keyed by trace id)
                            │
                            ▼
                          keyed ──► join_traces (agent, micro-batches) ──► ClickHouse
                                   │                                   feedback, traces,
                                   ├──► feedback.enriched ──┐          dead_letters
                                   ├──► dlq                 │
                                   └──► keyed (events on the wrong partition)
                                                            ▼
                      rates (agent: bad_feedback_rates + spike_alerts) ──► ClickHouse
                                   ├──► rates                          feedback_rates,
                                   ├──► alerts ──► webhooks            alerts
                                   └──► Prometheus gauges

``StreamApp`` runs inside an existing asyncio program (``thumbline up``): no
autodiscovery, no signal handlers of its own, no terminal spinner. Processing
is at-least-once (the embedded broker has no transactions); exactness comes
from the tables' version keys and from idempotent window state.

One worker runs everything (``runs="all"``), key_by_trace included (any number of
its stages share one consumer group, each holding a share of the input
partitions). With ``THUMBLINE_STREAM_WORKERS``
> 1 join helpers (:mod:`thumbline.server.workers`, ``runs="join"``) run the join
alone in the same consumer group: Faust's assignor splits the join's
co-partitioned topics among the members that read them and gives
``feedback.enriched``, which only ``thumbline up`` reads, to it alone, so the
rates see every row. A helper reaches an embedded store through its owner
(``store``).

Outages are waited out (:mod:`thumbline.outages`): the jobs' sends, inserts
and lookups retry what Kafka or the store did not take, for as long as it
takes, holding their input meanwhile; a watch probes the broker so that
readiness says when it does not answer; the rates' windows wait, as the join's
watermark stops with its input. Only an error waiting cannot cure
ends the app (:meth:`StreamApp.wait_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from thumbline.metrics import Metrics
from thumbline.outages import STORE, WaitAborted, Waits
from thumbline.schemas import Topics
from thumbline.settings import Settings
from thumbline.store import open_client
from thumbline.stream_jobs.bad_feedback_rates import RateState
from thumbline.stream_jobs.faust_app import FETCH_MAX_WAIT_MS, build_faust_app, join_group, tune_gc
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.join_traces import JoinTracesJob
from thumbline.stream_jobs.key_by_trace import KeyByTrace
from thumbline.stream_jobs.lookups import load_orphans, load_score_configs, lookup_traces
from thumbline.stream_jobs.rates_job import RatesJob
from thumbline.stream_jobs.read_otlp import ReadOtlp
from thumbline.stream_jobs.sink import ClickHouseSink, StoreClient
from thumbline.stream_jobs.spike_alerts import SpikeDetector, load_rules
from thumbline.stream_jobs.webhooks import WebhookNotifier
from thumbline.stream_jobs.worker_health import (
    LAG_SECONDS,
    leave_group,
    probe_broker,
    report_lag,
    report_route_lag,
    unless_waiting,
)

logger = logging.getLogger(__name__)


#: What a StreamApp runs: everything (``thumbline up``), the join alone (a join
#: helper), key_by_trace alone (its helper, ``THUMBLINE_KEY_BY_TRACE_PROCESS``), or
#: the rates alone (not used by thumbline up yet).
Runs = Literal["all", "join", "route", "rates"]

TICK_SECONDS = 0.25
RATES_TICK_SECONDS = 0.5
HISTORY_FOR_SPIKES = 4 * 3600.0


class StreamApp:
    """The join job and its Faust app; ``start()`` and ``stop()`` (safe twice) in a running loop."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        app_id: str | None = None,
        metrics: Metrics | None = None,
        runs: Runs = "all",
        store: Callable[[bool], StoreClient] | None = None,
        waits: Waits | None = None,
    ) -> None:
        self.settings = settings
        #: What this worker waits for (shared with the gateway in ``thumbline up``).
        self.waits = waits or Waits(metrics, mask=settings.mask)
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.metrics = metrics
        self.runs = runs
        #: Opens a store client (argument: read-only); default: the store itself.
        self.store = store or (lambda readonly: open_client(settings, readonly=readonly))
        self.topics = Topics.build(settings.topic_prefix, settings.partitions)
        self.job: JoinTracesJob | None = None
        self.rates: RatesJob | None = None
        self.router: KeyByTrace | None = None
        self._notifier: WebhookNotifier | None = None
        self._app: faust.App | None = None
        self._producer: AIOKafkaProducer | None = None
        self._watching: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None  # what an agent raised
        self._abandoned = False
        self._configs_client: StoreClient | None = None

    async def start(self) -> None:
        s = self.settings
        rules = load_rules(s.alert_rules, s.rate_window_seconds)  # a bad file fails first
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            compression_type="lz4",
            max_request_size=4 * 1024 * 1024,
            **s.kafka_kwargs(),
        )
        await self._producer.start()
        if self.runs == "route":
            await self._start_router(join_group(s, self.app_id))
            self._watching = asyncio.create_task(
                report_route_lag(lambda: self.router, self.metrics)
            )
            return
        rates = None if self.runs == "join" else await self._start_rates(rules)
        job = self.job = None if self.runs == "rates" else await self._join_job()
        app = self._app = build_faust_app(s, self.bootstrap, self.app_id)
        batch_size, batch_seconds = s.stream_batch_size, s.stream_batch_seconds

        def raw_topic(*names: str) -> Any:
            return app.topic(
                *names, key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw",
            )  # fmt: skip

        def in_batches(handle: Any, crash_switch: Any = None) -> Any:
            async def agent(stream: faust.StreamT[bytes]) -> None:
                batches = stream.take_events(batch_size, within=batch_seconds)  # type: ignore[attr-defined]
                try:
                    async for events in batches:
                        await handle(events)
                        if crash_switch is not None and crash_switch.exists():
                            crash_switch.unlink(missing_ok=True)
                            raise RuntimeError(f"fault injected: {crash_switch} existed")
                except WaitAborted:
                    raise  # stopping while an outage lasts
                except Exception as exc:
                    # Faust would restart the agent and go on past the batch it held; a
                    # bug ends this worker instead (wait_failed), to be started again.
                    self._failure = self._failure or exc
                    raise

            return agent

        t = self.topics
        inputs = {t.keyed.name} if s.key_by_trace else {t.feedback.name, t.traces.name}
        if job is not None:
            joins = raw_topic(*sorted(inputs | {t.keyed.name}))
            crash = s.fault_dir / f"crash-join-{os.getpid()}" if s.fault_dir else None
            app.agent(joins, name="join_traces")(in_batches(job.handle, crash))
            app.timer(TICK_SECONDS, name="join_traces_tick")(job.tick)
        if rates is not None:
            enriched = raw_topic(self.topics.enriched.name)
            app.agent(enriched, name="rates")(in_batches(rates.handle))
            app.timer(RATES_TICK_SECONDS, name="rates_tick")(rates.tick)

        # A rebalance: partitions that moved are replayed from their last commit by
        # their new holder. The join's watermarks come from whoever holds a join
        # partition; the rates of the projects of an enriched partition that moved are
        # rebuilt by its new holder from the store (what the old one wrote before it).
        enriched_name = self.topics.enriched.name
        if rates is not None:

            @app.on_partitions_revoked.connect  # type: ignore[arg-type]
            async def rates_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
                await rates.revoke()

            @app.on_partitions_assigned.connect  # type: ignore[arg-type]
            async def rates_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
                await rates.assign({tp.partition for tp in assigned if tp.topic == enriched_name})

        if job is not None:

            def highwater(topic: str, partition: int) -> int | None:
                try:
                    return app.consumer.highwater(TP(topic, partition))
                except AssertionError:  # revoked by a rebalance in flight: not known here
                    return None

            job.marks.highwater = highwater

            @app.on_partitions_revoked.connect  # type: ignore[arg-type]
            async def revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
                logger.info("the consumer group rebalances (%d partitions revoked)", len(revoked))
                if not self._abandoned:  # flushed before the next holder of a partition reads
                    await job.revoke()  # the store

            @app.on_partitions_assigned.connect  # type: ignore[arg-type]
            async def reassigned(sender: Any, assigned: set[Any], **_: Any) -> None:
                await job.assign({tp.partition for tp in assigned if tp.topic in inputs})

        @app.timer(LAG_SECONDS, name="consumer_lag")
        async def consumer_lag() -> None:
            if self.metrics is not None:
                await report_lag(app, metrics=self.metrics, waits=self.waits, router=self.router)

        if job is not None and self.runs == "all" and s.key_by_trace:
            if not s.key_by_trace_process:  # else its own helper runs it (thumbline.server.workers)
                await self._start_router(app.conf.id)
        await app.start()
        self._watching = asyncio.create_task(probe_broker(self._producer.client, self.waits))
        tune_gc()

    async def _start_router(self, group: str) -> None:
        """key_by_trace, in group ``<group>-key_by_trace``; ``group`` is the join's."""
        s = self.settings
        assert self._producer is not None  # noqa: S101 (started first)
        self.router = KeyByTrace(
            topics=self.topics, bootstrap=self.bootstrap, group=f"{group}-key_by_trace",
            producer=self._producer, waits=self.waits, kafka_kwargs=s.kafka_kwargs(),
            metrics=self.metrics, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            otlp=ReadOtlp(
                s.otlp_topic, s.otlp_encoding, s.otlp_project, s.time_bounds,
                capture_content=s.capture_content,
            ) if s.otlp_topic else None,
        )  # fmt: skip
        await self.router.start(take_over_from=group)

    async def _join_job(self) -> JoinTracesJob:
        s, db = self.settings, self.settings.clickhouse_database
        assert self._producer is not None  # noqa: S101 (started first)
        sink_client = await asyncio.to_thread(self.store, False)
        lookup_client = await asyncio.to_thread(self.store, True)
        # Its own client: the configs are read again while a lookup may run (one query
        # at a time per client).
        self._configs_client = configs_client = await asyncio.to_thread(self.store, True)
        # Retried inside the call: the join's expiry changes its state around a lookup.
        lookup = self.waits.blocking(STORE, "join_lookup", lookup_traces)
        orphans = self.waits.blocking(STORE, "join_load_orphans", load_orphans)
        # The first read waits out an outage: the join must not decide labels without them.
        configs = await asyncio.to_thread(
            self.waits.blocking(STORE, "join_score_configs", load_score_configs),
            configs_client, db,
        )  # fmt: skip
        state = JoinState(
            grace_seconds=s.join_grace_seconds, retention_seconds=s.join_retention_seconds,
            max_pending=s.join_max_pending, max_traces=s.join_max_traces,
            max_orphans=s.join_max_orphans, pending_row_seconds=s.join_pending_row_seconds,
        )  # fmt: skip
        job = JoinTracesJob(
            topics=self.topics,
            state=state,
            sink=ClickHouseSink(
                sink_client,
                db,
                max_rows=s.sink_max_rows,
                max_age=s.sink_max_seconds,
                capture_content=s.capture_content,
            ),
            lookup=lambda ids: lookup(lookup_client, db, ids, now=state.clock()),
            orphans=lambda: orphans(
                lookup_client, db, datetime.now(UTC) - timedelta(seconds=s.join_retention_seconds)
            ),
            producer=self._producer,
            metrics=self.metrics,
            time_bounds=s.time_bounds,
            waits=self.waits,
            routed=s.key_by_trace,
            score_configs=lambda: load_score_configs(configs_client, db),
            score_configs_seconds=s.score_configs_seconds,
            one_vote_per_user=s.one_vote_per_user,
        )
        job.set_score_configs(configs)
        return job

    async def _start_rates(self, rules: Any) -> RatesJob:
        s, db = self.settings, self.settings.clickhouse_database
        assert self._producer is not None  # noqa: S101 (started first)
        self._notifier = WebhookNotifier(s.webhook_urls, metrics=self.metrics)
        self._notifier.start()
        rates = self.rates = RatesJob(
            topics=self.topics,
            rates=RateState(
                window=s.rate_window_seconds,
                sliding=s.sliding_windows,
                lateness=s.rate_lateness_seconds,
                # enough for the rules' baselines, and for the pre-onset baseline of
                # an alert firing for up to HISTORY_FOR_SPIKES
                history=max((*s.sliding_windows, *(r.window + r.baseline for r in rules)))
                + HISTORY_FOR_SPIKES,
                reconcile=s.rate_reconcile_seconds,
                max_cells=s.rate_max_cells,
                max_events=s.rate_max_events,
                annotators=s.counted_annotators,
            ),
            detector=SpikeDetector(rules, max_tracks=s.alert_max_tracks),
            sink=ClickHouseSink(await asyncio.to_thread(self.store, False), db),
            producer=self._producer,
            store=await asyncio.to_thread(self.store, True),
            database=db,
            notifier=self._notifier,
            metrics=self.metrics,
            waits=self.waits,
        )
        return rates  # restored by its first assign(), for its share of the projects only

    async def wait_failed(self) -> BaseException:
        """Return once an agent or a timer raised an error waiting cannot cure (a bug),
        with the error. Outages of Kafka or the store never end up here: they are waited out."""
        while True:
            app = self._app
            if self._failure is not None:
                return self._failure
            if self.router is not None and self.router.failure is not None:
                return self.router.failure
            if app is not None and app.crashed:
                return app.crash_reason or RuntimeError("the stream app crashed")
            await asyncio.sleep(0.25)

    async def abandon(self) -> None:
        """Leave the consumer group at once, flushing and committing nothing.

        For a worker that failed, before its process exits: its partitions go to
        the other workers now rather than after the session timeout, and what it
        held unacknowledged is replayed there.
        """
        self._abandoned = True
        self.waits.stop()
        if self._app is not None:
            await leave_group(self._app)

    async def stop(self) -> None:
        """Stop; safe twice. Flushes and commits what is complete, unless the store or
        Kafka does not answer: then what waits is left unacknowledged, to be replayed."""
        self.waits.stop()  # waits under way give up; calls that go through are unaffected
        watch, self._watching = self._watching, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        router, self.router = self.router, None
        if router is not None:  # no more input for the join: what it routed is committed
            await router.stop()
        app, self._app = self._app, None
        job, self.job = self.job, None
        if job is not None and not self._abandoned:
            # flush and acknowledge first, so stopping commits the offsets
            with unless_waiting("the join's complete rows"):
                await job.close()
        if app is not None:
            await app.stop()
        if job is not None:
            with unless_waiting("the join's last rows"):
                job.sink.close()
        configs_client, self._configs_client = self._configs_client, None
        if configs_client is not None:
            configs_client.close()
        rates, self.rates = self.rates, None
        if rates is not None:
            with unless_waiting("the last rate windows"):
                rates.sink.close()
            if rates.store is not None:
                rates.store.close()
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.drain(2.0)
            await notifier.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
