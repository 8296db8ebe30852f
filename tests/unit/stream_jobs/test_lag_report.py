"""The consumer-lag timer survives a rebalance that moves a partition away mid-report.

aiokafka asserts that a partition is still assigned when its highwater is read; a
rebalance between reading the assignment and reading the highwater once crashed
`thumbline up` ("Partition is not assigned"), seen in CI with two join processes.
"""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics
from thumbline.outages import Waits
from thumbline.stream_jobs.worker_health import report_lag


class Moving:
    """A consumer whose second partition is revoked while its position is awaited."""

    def __init__(self) -> None:
        self.tps = [TopicPartition("t.keyed", 0), TopicPartition("t.keyed", 1)]
        self.assigned = set(self.tps)

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    async def position(self, tp: TopicPartition) -> int:
        if tp.partition == 1:
            self.assigned.discard(tp)  # the rebalance lands while we wait
        return 10

    def highwater(self, tp: TopicPartition) -> int:
        assert tp in self.assigned, "Partition is not assigned"  # as aiokafka does
        return 25


async def test_a_partition_revoked_while_its_lag_is_read_is_skipped_not_a_crash():
    metrics = Metrics(CollectorRegistry())
    app = SimpleNamespace(consumer=Moving())
    await report_lag(app, metrics=metrics, waits=Waits(), router=None)  # type: ignore[arg-type]
    assert (
        metrics.registry.get_sample_value("thumbline_consumer_lag_messages", {"topic": "t.keyed"})
        == 15
    )
