"""Several key_by_trace stages in one consumer group, on the real broker (and chDB for the
join): the input partitions are split among them, move when one stops or dies, and the
join's watermark waits for every input partition to be reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.conftest import unique
from tests.integration.test_join import eventually
from tests.integration.test_key_by_trace import PARTITIONS, joined, send_one_by_one
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import Settings, load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.faust_app import join_group
from thumbline.stream_jobs.key_by_trace import KeyByTrace
from thumbline.stream_jobs.routed_marks import RoutedMarks


class Keyed:
    """Everything on ``keyed`` from the start: each event's copies, and the routed markers."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.consumer = AIOKafkaConsumer(
            topics.keyed.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None,
        )  # fmt: skip
        self.copies: Counter[str] = Counter()  # "feedback:<event id>" or "traces:<trace id>"
        self.marks = RoutedMarks()
        self.markers: list[dict] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Keyed:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _read(self) -> None:
        while True:
            for tp, messages in (await self.consumer.getmany(timeout_ms=200)).items():
                for message in messages:
                    body = orjson.loads(message.value)
                    if "routed_inputs" in body or "routed" in body:
                        self.markers.append(body)
                        self.marks.add(tp.partition, body)
                        continue
                    self.copies.update(f"feedback:{e['event_id']}" for e in body["feedback"])
                    self.copies.update(f"traces:{e['trace_id']}" for e in body["traces"])

    def missing(self, ids: list[str]) -> list[str]:
        """The events of ``ids`` (a trace and a thumb each) not in ``keyed`` yet."""
        wanted = [f"traces:{i}" for i in ids] + [f"feedback:e-{i}" for i in ids]
        return [w for w in wanted if not self.copies[w]]


def settings_for(store_settings: Settings, prefix: str, **extra: object) -> Settings:
    return load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=PARTITIONS, sink_max_seconds=0.2, **extra,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def stages(settings: Settings, bootstrap: str, n: int) -> AsyncIterator[list[StreamApp]]:
    """``n`` key_by_trace stages (``runs="route"``, as a worker's), stopped at the end."""
    apps = [StreamApp(settings, bootstrap, runs="route") for _ in range(n)]
    try:
        for app in apps:
            await app.start()
        yield apps
    finally:
        for app in apps:
            await app.stop()


def router(app: StreamApp) -> KeyByTrace:
    assert app.router is not None
    return app.router


def inputs(topics: Topics) -> set[TopicPartition]:
    return {TopicPartition(t.name, p) for t in (topics.feedback, topics.traces)
            for p in range(PARTITIONS)}  # fmt: skip


def split(apps: list[StreamApp], topics: Topics) -> bool:
    """Each stage holds a share, no two the same partition, together all of them."""
    shares = [router(a).held for a in apps]
    together = set().union(*shares)
    return all(shares) and together == inputs(topics) and sum(map(len, shares)) == len(together)


async def test_two_stages_in_one_group_split_the_input_and_route_each_event_once(
    broker, store_settings
):
    prefix = await _prefix(broker)
    topics, settings = Topics.build(prefix, PARTITIONS), settings_for(store_settings, prefix)
    ids = [f"{prefix}t{i}" for i in range(500)]
    async with (
        stages(settings, broker.bootstrap, 2) as (a, b),
        Keyed(broker.bootstrap, topics) as keyed,
    ):
        await eventually(lambda: split([a, b], topics), timeout=60)
        await send_one_by_one(broker.bootstrap, topics, ids)
        await eventually(lambda: not keyed.missing(ids), timeout=60)
        # each input message was routed by one stage, each stage routed its share
        routed = [router(a).counts["messages"], router(b).counts["messages"]]
        assert all(routed) and sum(routed) == 2 * len(ids)
        assert set(keyed.copies.values()) == {1}  # no one failed: every event once
        assert split([a, b], topics)  # no rebalance meanwhile
        # together their markers cover every input partition on every partition of keyed
        await eventually(
            lambda: all(keyed.marks.of(p) for p in range(PARTITIONS)), timeout=30
        )  # fmt: skip
        last = {frozenset(m["routed_inputs"]) for m in keyed.markers[-4 * PARTITIONS :]}
        names = [{f"{tp.topic}:{tp.partition}" for tp in router(x).held} for x in (a, b)]
        assert all(any(claimed <= n for n in names) for claimed in last)  # each its own share


async def test_a_stage_that_stops_hands_its_partitions_to_the_other_with_nothing_lost(
    broker, store_settings
):
    prefix = await _prefix(broker)
    topics, settings = Topics.build(prefix, PARTITIONS), settings_for(store_settings, prefix)
    before = [f"{prefix}a{i}" for i in range(200)]
    after = [f"{prefix}b{i}" for i in range(200)]
    async with (
        stages(settings, broker.bootstrap, 2) as (a, b),
        Keyed(broker.bootstrap, topics) as keyed,
    ):
        await eventually(lambda: split([a, b], topics), timeout=60)
        await send_one_by_one(broker.bootstrap, topics, before)
        await eventually(lambda: not keyed.missing(before), timeout=60)
        await b.stop()
        await send_one_by_one(broker.bootstrap, topics, after)
        await eventually(lambda: router(a).held == inputs(topics), timeout=60)
        await eventually(lambda: not keyed.missing(before + after), timeout=60)
        assert router(a).failure is None


async def test_a_stage_that_dies_between_publishing_and_committing_is_replayed_and_counted_once(
    broker, store, store_settings, query
):
    prefix = await _prefix(broker)
    topics = Topics.build(prefix, PARTITIONS)
    settings = settings_for(store_settings, prefix)
    # the join (and the rates) in a worker whose key_by_trace runs elsewhere: the stages here
    join = StreamApp(settings_for(store_settings, prefix, key_by_trace_process=True),
                     broker.bootstrap)  # fmt: skip
    ids = [f"{prefix}t{i}" for i in range(300)]
    await join.start()
    try:
        async with (
            stages(settings, broker.bootstrap, 2) as (a, b),
            Keyed(broker.bootstrap, topics) as keyed,
        ):
            await eventually(lambda: split([a, b], topics), timeout=60)
            dying = router(b)
            doomed = dying.held

            async def dies(offsets: dict) -> None:  # published, then killed before the commit
                await asyncio.Event().wait()

            dying._commit = dies  # type: ignore[method-assign]
            await send_one_by_one(broker.bootstrap, topics, ids)
            await eventually(lambda: dying.counts["messages"] > 0, timeout=60)
            # killed: no commit, no LeaveGroup (generation -1: aiokafka sends none); the
            # group notices when its session times out
            task = dying._task
            assert task is not None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            dying._task = None
            dying.consumer._coordinator.generation = -1
            await b.stop()

            await eventually(lambda: router(a).held == inputs(topics), timeout=60)
            await eventually(lambda: not keyed.missing(ids), timeout=60)
            assert router(a).failure is None
            # what the dead stage published is in keyed twice: replayed from the last commit
            replayed = [k for k, n in keyed.copies.items() if n > 1]
            assert replayed and doomed
            await eventually(lambda: joined(query, prefix) == len(ids), timeout=60)
    finally:
        await join.stop()
    # the join counts events by identity: one row per thumb, whatever copies it read
    rows = query(
        f"SELECT count(), uniqExact(event_id) FROM {{db}}.feedback FINAL "
        f"WHERE startsWith(trace_id, '{prefix}')"
    )  # fmt: skip
    assert rows == [(len(ids), len(ids))]


async def test_the_joins_watermark_does_not_pass_an_input_partition_nobody_reported(
    broker, store, store_settings
):
    prefix = await _prefix(broker)
    topics = Topics.build(prefix, PARTITIONS)
    settings = settings_for(store_settings, prefix)
    # a member of the stages' group that holds partitions and never reports them (a stage
    # stuck on a batch): it joins first, so no one has ever claimed its partitions
    silent = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=f"{join_group(settings)}-key_by_trace",
        enable_auto_commit=False, session_timeout_ms=6_000, heartbeat_interval_ms=2_000,
    )  # fmt: skip
    await silent.start()
    silent.subscribe([topics.feedback.name, topics.traces.name])
    join = StreamApp(settings_for(store_settings, prefix, key_by_trace_process=True),
                     broker.bootstrap)  # fmt: skip
    try:
        await eventually(lambda: silent.assignment() == inputs(topics), timeout=60)
        await join.start()
        async with stages(settings, broker.bootstrap, 1) as (stage,):
            mine = lambda: router(stage).held  # noqa: E731
            await eventually(lambda: mine() and silent.assignment() == inputs(topics) - mine(),
                             timeout=60)  # fmt: skip
            job = join.job
            assert job is not None
            claimed = job.marks._routed

            # the join has read the stage's claims for its share, on every partition of keyed
            await eventually(
                lambda: all(claimed.claims(p) >= len(mine()) for p in range(PARTITIONS)),
                timeout=60,
            )
            now = time.time()
            assert all(claimed.of(p) is None for p in range(PARTITIONS))
            assert all(job.marks.of(p, job.output.order, now) is None for p in range(PARTITIONS))

            await silent.stop()  # its partitions move to the stage, which reports them
            silent_stopped = time.time()
            await eventually(lambda: router(stage).held == inputs(topics), timeout=60)
            await eventually(
                lambda: all((claimed.of(p) or 0) > silent_stopped for p in range(PARTITIONS)),
                timeout=60,
            )
    finally:
        await silent.stop()
        await join.stop()


async def _prefix(broker) -> str:
    prefix = f"{unique('stages')}."
    await ensure_topics(broker.bootstrap, Topics.build(prefix, PARTITIONS).all())
    return prefix
