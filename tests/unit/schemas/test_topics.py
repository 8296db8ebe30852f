"""The topic registry and thumbline's partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafkas_murmur2
from hypothesis import given
from hypothesis import strategies as st

from thumbline.schemas import Topics, partition_for, rates_partition
from thumbline.schemas.topics import murmur2


def test_default_names_use_the_thumbline_prefix():
    names = [t.name for t in Topics.build().all()]
    assert names == [
        "thumbline.feedback",
        "thumbline.traces",
        "thumbline.keyed",
        "thumbline.feedback.enriched",
        "thumbline.rates",
        "thumbline.alerts",
        "thumbline.dlq",
    ]


def test_the_join_topics_are_co_partitioned():
    topics = Topics.build("x.", 12)
    assert {topics.feedback.partitions, topics.traces.partitions, topics.enriched.partitions} == {
        12
    }
    assert topics.feedback.key == topics.traces.key == topics.keyed.key == "trace_id"


def test_enriched_feedback_is_on_the_partition_of_its_project_so_one_worker_counts_its_rates():
    topics = Topics.build("x.", 12)
    assert topics.enriched.key == "project"
    assert rates_partition("shop", 12) == partition_for("shop", 12)
    assert len({rates_partition(f"project-{n}", 12) for n in range(200)}) == 12


def test_every_topic_declares_its_contract():
    for topic in Topics.build().all():
        assert topic.model.model_fields["schema_version"].default == 1


@given(st.text(min_size=1, max_size=64), st.integers(1, 64))
def test_partition_for_agrees_with_kafkas_default_partitioner(trace_id, partitions):
    expected = DefaultPartitioner()(trace_id.encode(), list(range(partitions)), [])
    assert partition_for(trace_id, partitions) == expected


# murmur2 of these keys as Kafka's Java client computes it (Utils.murmur2), as signed ints.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


def test_partition_for_matches_the_java_client():
    for key, signed in JAVA_MURMUR2.items():
        java_partition = (signed & 0x7FFFFFFF) % 24  # Utils.toPositive(murmur2(key)) % n
        assert partition_for(key, 24) == java_partition


@given(st.binary(max_size=300))
def test_our_murmur2_is_kafkas(data):
    """The partitioner's hash equals aiokafka's (and so the Java client's) on any bytes."""
    assert murmur2(data) == kafkas_murmur2(data)
