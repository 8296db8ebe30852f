"""The join's state machine, broker-free: every arrival order of feedback and trace."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest

from thumbline.schemas import FeedbackEvent, JoinStatus, TraceEvent
from thumbline.stream_jobs.enriched_rows import TraceAttributes, version_of
from thumbline.stream_jobs.join_state import JoinState

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def trace(trace_id: str = "t1", **fields) -> TraceEvent:
    return TraceEvent.parse(
        {"trace_id": trace_id, "project": "shop", "environment": "prod", "model": "m1", **fields}
    )


def feedback(
    trace_id: str = "t1", event_id: str = "e1", received: float = 0, **fields
) -> FeedbackEvent:
    data = {
        "trace_id": trace_id,
        "event_id": event_id,
        "project": "shop",
        "label": "bad",
        "received_at": T0 + timedelta(seconds=received),
        **fields,
    }
    return FeedbackEvent.parse(data)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock) -> JoinState:
    return JoinState(grace_seconds=600, retention_seconds=3600, clock=clock)


def test_who_gave_the_feedback_is_kept_on_joined_and_orphan_rows(state, clock):
    state.add_traces([trace()])
    [joined] = state.add_feedback([feedback(annotator="evaluator")])
    [user] = state.add_feedback([feedback(event_id="e2")])
    assert (joined.annotator, user.annotator) == ("evaluator", "end_user")
    assert state.add_feedback([feedback("t-none", "e3", annotator="code")]) == []
    clock.advance(601)
    [orphan] = state.expire()
    assert (orphan.join_status, orphan.annotator) == ("orphan", "code")


def test_feedback_after_its_trace_is_emitted_at_once_with_the_trace_attributes(state):
    assert state.add_traces([trace(capability="support", user_id="u1", latency_ms=820)]) == []
    [row] = state.add_feedback([feedback(comment="wrong")])
    assert (row.join_status, row.project, row.environment, row.model) == (
        "joined",
        "shop",
        "prod",
        "m1",
    )
    assert (row.capability, row.user_id, row.latency_ms, row.comment) == (
        "support",
        "u1",
        820,
        "wrong",
    )


def test_feedback_before_its_trace_waits_and_is_emitted_when_the_trace_arrives(state, clock):
    assert state.add_feedback([feedback()]) == []
    assert state.stats()["pending"] == 1
    clock.advance(30)
    [row] = state.add_traces([trace()])
    assert (row.join_status, row.project) == ("joined", "shop")
    assert state.stats()["pending"] == 0


def test_feedback_whose_trace_never_comes_is_an_orphan_after_the_grace(state, clock):
    state.add_feedback([feedback(user_id="u9", project="from-feedback")])
    clock.advance(599)
    assert state.expire() == []
    clock.advance(2)
    [row] = state.expire()
    assert (row.join_status, row.project, row.model, row.user_id) == (
        "orphan",
        "from-feedback",
        "",
        "u9",
    )


def test_a_late_trace_corrects_the_orphan_with_a_higher_version(state, clock):
    state.add_feedback([feedback()])
    clock.advance(601)
    [orphan] = state.expire()
    clock.advance(3000)
    [corrected] = state.add_traces([trace()])
    assert corrected.event_id == orphan.event_id
    assert (corrected.join_status, corrected.project) == ("corrected", "shop")
    assert corrected.version > orphan.version


def test_the_store_is_asked_before_feedback_is_called_an_orphan(state, clock):
    state.add_feedback([feedback(trace_id="old")])
    clock.advance(601)
    asked = []

    def found(keys):
        asked.append(list(keys))
        attrs = TraceAttributes("old", project="shop", model="m0")
        return {("shop", "old"): attrs}

    [row] = state.expire(found)
    assert asked == [[("shop", "old")]]
    assert (row.join_status, row.project, row.model) == ("joined", "shop", "m0")


def test_a_trace_in_many_spans_merges_into_one_set_of_attributes(state):
    state.add_traces(
        [
            trace(
                span_id="s2",
                parent_span_id="s1",
                environment="default",
                model="m-small",
                cost_usd=0.01,
                total_tokens=100,
                step="retrieve",
            ),
            trace(
                span_id="s3",
                parent_span_id="s1",
                environment="default",
                model="m-small",
                cost_usd=0.02,
                total_tokens=50,
                status="error",
            ),
            trace(span_id="s1", model="m-big", capability="support", latency_ms=900),
        ]
    )
    [row] = state.add_feedback([feedback()])
    assert (row.project, row.environment, row.model, row.capability) == (
        "shop",
        "prod",
        "m-big",
        "support",
    )
    assert row.cost_usd == pytest.approx(0.03) and row.total_tokens == 150
    assert (row.latency_ms, row.trace_status, row.step) == (900, "error", "retrieve")


def test_a_span_delivered_twice_is_counted_once(state):
    span = trace(span_id="s2", parent_span_id="s1", cost_usd=0.5)
    state.add_traces([span, span])
    [row] = state.add_feedback([feedback()])
    assert row.cost_usd == 0.5


def test_several_feedback_events_per_trace_and_user_are_all_kept(state):
    state.add_traces([trace()])
    rows = state.add_feedback(
        [
            feedback(event_id="a", user_id="u1"),
            feedback(event_id="b", user_id="u1", kind="rating", value=5, label=None),
            feedback(event_id="c", user_id="u2", span_id="s7"),
        ]
    )
    assert [(r.event_id, r.label, r.span_id) for r in rows] == [
        ("a", "bad", None),
        ("b", "good", None),
        ("c", "bad", "s7"),
    ]


def test_the_same_event_resent_later_gets_a_higher_version_and_a_redelivery_the_same(state):
    state.add_traces([trace()])
    [first] = state.add_feedback([feedback(received=0, label="bad")])
    [again] = state.add_feedback([feedback(received=0, label="bad")])
    [changed] = state.add_feedback([feedback(received=60, label="good")])
    assert again.version == first.version
    assert changed.version > first.version and changed.label == "good"


def test_a_retraction_is_emitted_as_a_retracted_row(state):
    state.add_traces([trace()])
    [row] = state.add_feedback(
        [
            FeedbackEvent.parse(
                {
                    "trace_id": "t1",
                    "event_id": "e1",
                    "project": "shop",
                    "retracted": True,
                    "received_at": T0 + timedelta(seconds=5),
                }
            )
        ]
    )
    assert row.retracted and row.event_id == "e1"
    assert row.version > version_of(feedback(), JoinStatus.JOINED)


def test_while_waiting_a_resent_event_replaces_the_held_one(state):
    state.add_feedback([feedback(received=0, label="bad"), feedback(received=10, label="good")])
    [row] = state.add_traces([trace()])
    assert row.label == "good"


def test_traces_older_than_the_retention_are_forgotten(state, clock):
    state.add_traces([trace()])
    clock.advance(3601)
    state.expire()
    assert state.stats()["traces"] == 0
    assert state.add_feedback([feedback()]) == []  # waits: the store is asked at expiry


def test_versions_order_the_states_of_one_event():
    event = feedback()
    assert (
        version_of(event, JoinStatus.ORPHAN)
        < version_of(event, JoinStatus.JOINED)
        < version_of(event, JoinStatus.CORRECTED)
    )


def test_held_feedback_hands_back_its_ref_once_emitted(state, clock):
    state.add_feedback(
        [feedback(trace_id="a", event_id="1"), feedback(trace_id="b", event_id="2")],
        refs=["msg-a", "msg-b"],
    )
    assert state.take_released() == []
    state.add_traces([trace("a")])
    assert state.take_released() == ["msg-a"]
    clock.advance(601)
    state.expire()
    assert state.take_released() == ["msg-b"]


def test_a_superseded_held_event_releases_its_ref(state):
    state.add_feedback([feedback(received=0)], refs=["old"])
    state.add_feedback([feedback(received=10)], refs=["new"])
    state.add_feedback([feedback(received=5)], refs=["stale"])
    assert sorted(state.take_released()) == ["old", "stale"]


def test_orphans_from_before_a_restart_are_still_corrected(state):
    state.add_orphans([feedback(trace_id="late")])
    [row] = state.add_traces([trace("late")])
    assert row.join_status == "corrected"


def test_the_next_deadline_is_the_earliest_held_event(state, clock):
    assert state.next_deadline() is None
    state.add_feedback([feedback(trace_id="a")])
    clock.advance(10)
    state.add_feedback([feedback(trace_id="b")])
    assert state.next_deadline() == T0.timestamp() + 600


def test_a_held_event_resent_later_waits_a_full_grace_from_the_resend(state, clock):
    state.add_feedback([feedback(received=0)])
    clock.advance(500)
    state.add_feedback([feedback(received=500, label="good")])  # the user changed their mind
    clock.advance(200)  # 700 s after the first copy, 200 s after the second
    assert state.expire() == []
    clock.advance(400)
    [row] = state.expire()
    assert (row.join_status, row.label) == ("orphan", "good")


def test_expiry_keeps_up_with_many_held_traces_emitting_each_once(state, clock):
    for i in range(1000):
        state.add_feedback([feedback(trace_id=f"t{i}", event_id=f"e{i}")])
        clock.advance(1)
    clock.advance(99)  # now 1099: the events held at 0..499 have waited a whole grace
    assert len(state.expire()) == 500
    assert state.expire() == []
    clock.advance(500)
    assert len(state.expire()) == 500 and not state.pending


def test_a_partition_that_moved_away_is_forgotten_without_releasing_its_waiting_feedback(
    state, clock
):
    state.add_traces([trace("kept"), trace("moved")])
    state.add_feedback([feedback(trace_id="waits-moved")], refs=["msg-1"])
    state.add_feedback([feedback(trace_id="waits-kept")], refs=["msg-2"])
    state.forget(lambda trace_id: "moved" in trace_id)
    assert set(state.traces) == {("shop", "kept")}
    assert set(state.pending) == {("shop", "waits-kept")}
    assert state.take_released() == []  # its input stays unacknowledged: the new holder replays it
    clock.advance(601)
    assert [row.trace_id for row in state.expire()] == ["waits-kept"]  # no orphan for the moved


# Tenant isolation -------------------------------------------------------------


def test_feedback_joins_only_a_trace_of_its_own_project(state, clock):
    state.add_traces([trace("shared", model="b-model", project="b")])
    assert state.add_feedback([feedback("shared", event_id="a1", project="a")]) == []
    clock.advance(601)
    [orphan] = state.expire()
    assert (orphan.join_status, orphan.project, orphan.model) == ("orphan", "a", "")
    [own] = state.add_feedback([feedback("shared", event_id="b1", project="b")])
    assert (own.join_status, own.project, own.model) == ("joined", "b", "b-model")


def test_a_trace_of_another_project_with_the_same_id_changes_nothing_of_this_one(state):
    state.add_traces([trace("shared", project="b", model="b-model", environment="prod")])
    state.add_traces([trace("shared", project="a", model="evil", environment="staging")])
    [row] = state.add_feedback([feedback("shared", project="b")])
    assert (row.project, row.model, row.environment) == ("b", "b-model", "prod")


def test_feedback_without_a_project_belongs_to_default(state):
    state.add_traces([trace("t-default", project="default", model="m-d")])
    event = FeedbackEvent.parse({"trace_id": "t-default", "label": "good"})
    [row] = state.add_feedback([event])
    assert (row.project, row.model) == ("default", "m-d")


def test_waiting_feedback_is_bounded_and_the_oldest_is_orphaned_first(clock):
    state = JoinState(grace_seconds=600, max_pending=3, clock=clock)
    assert state.add_feedback([feedback(f"t{i}", event_id=f"e{i}") for i in range(3)]) == []
    [orphan] = state.add_feedback([feedback("t9", event_id="e9")])
    assert (orphan.event_id, orphan.join_status) == ("e0", "orphan")
    assert state.stats()["pending"] == 3 and state.bound_hits["pending"] == 1
    [corrected] = state.add_traces([trace("t0")])  # a late trace still corrects it
    assert (corrected.event_id, corrected.join_status) == ("e0", "corrected")


def test_traces_and_orphans_past_their_bounds_are_forgotten_oldest_first(clock):
    state = JoinState(grace_seconds=1, max_traces=2, max_orphans=1, clock=clock)
    state.add_traces([trace("t1"), trace("t2"), trace("t3")])
    assert set(state.traces) == {("shop", "t2"), ("shop", "t3")}
    assert state.bound_hits["traces"] == 1  # t1 is in the store: a lookup would find it
    state.add_feedback([feedback("o1", event_id="e1"), feedback("o2", event_id="e2")])
    clock.advance(2)
    assert len(state.expire()) == 2
    assert set(state.orphans) == {("shop", "o2")} and state.bound_hits["orphans"] == 1


# Pending rows: feedback that waits is stored, marked, before its outcome --------------


def test_feedback_waiting_longer_than_the_delay_is_stored_once_as_pending(state, clock):
    state.add_feedback([feedback(comment="typo in the trace id?")])
    clock.advance(1.9)
    assert state.announce() == []  # most feedback waits only briefly: no row for it
    clock.advance(0.1)
    [row] = state.announce()
    assert (row.join_status, row.event_id, row.project, row.model, row.comment) == (
        "pending", "e1", "shop", "", "typo in the trace id?",
    )  # fmt: skip
    clock.advance(10)
    assert state.announce() == []  # once
    assert state.stats()["pending"] == 1  # still waiting: the row is a note, not an outcome


def test_feedback_joined_within_the_delay_gets_no_pending_row(state, clock):
    state.add_feedback([feedback()])
    clock.advance(1)
    [joined] = state.add_traces([trace()])
    clock.advance(5)
    assert joined.join_status == "joined" and state.announce() == []


def test_a_pending_row_ranks_below_every_final_row_of_the_same_event():
    event = feedback()
    assert version_of(event, JoinStatus.PENDING) < version_of(event, JoinStatus.ORPHAN)
    assert version_of(event, JoinStatus.PENDING) > version_of(feedback(received=-1),
                                                              JoinStatus.CORRECTED)  # fmt: skip


def test_a_pending_row_is_replaced_by_the_joined_or_orphan_row_that_follows(state, clock):
    state.add_feedback([feedback("a", event_id="ea"), feedback("b", event_id="eb")])
    clock.advance(2)
    pending = {row.event_id: row for row in state.announce()}
    [joined] = state.add_traces([trace("a")])
    clock.advance(600)
    [orphan] = state.expire()
    assert (joined.join_status, orphan.join_status) == ("joined", "orphan")
    assert joined.version > pending["ea"].version and orphan.version > pending["eb"].version


def test_no_pending_row_hides_a_final_one_retractions_and_resent_orphans(state, clock):
    state.add_feedback([feedback("gone", event_id="orphaned", received=0)])
    clock.advance(601)
    state.announce()
    [orphan] = state.expire()
    # the user changes their mind: the new copy waits, the stored orphan stays what shows
    state.add_feedback([feedback("gone", event_id="orphaned", received=601, label="good")])
    state.add_feedback([feedback("t2", event_id="retract", received=601, retracted=True)])
    clock.advance(5)
    assert orphan.join_status == "orphan" and state.announce() == []
    assert state.stats()["pending"] == 2


def test_a_resent_held_event_is_announced_as_its_latest_copy(state, clock):
    state.add_feedback([feedback(received=0, label="bad")])
    clock.advance(1)
    state.add_feedback([feedback(received=1, label="good")])
    clock.advance(1)
    assert state.announce() == []  # the copy held now has waited 1 s
    clock.advance(1)
    [row] = state.announce()
    assert row.label == "good" and row.version == version_of(
        feedback(received=1), JoinStatus.PENDING
    )


def test_with_no_delay_every_waiting_event_is_announced_at_the_next_call(clock):
    state = JoinState(grace_seconds=600, pending_row_seconds=0, clock=clock)
    state.add_feedback([feedback("t1", event_id="a"), feedback("t2", event_id="b")])
    assert sorted(row.event_id for row in state.announce()) == ["a", "b"]


def test_feedback_of_a_partition_that_moved_away_is_not_announced(state, clock):
    state.add_feedback([feedback(trace_id="moved")])
    state.forget(lambda trace_id: trace_id == "moved")
    clock.advance(5)
    assert state.announce() == []


def test_the_join_holds_no_question_and_no_answer_in_memory(clock):
    """A million traces in memory: only the store's rows carry their content."""
    state = JoinState(grace_seconds=10, clock=clock)
    event = trace(input="Capital of France?", output="Lyon. " * 2_000)
    answer = event.output
    before = sys.getrefcount(answer)
    state.add_traces([event])
    [joined] = state.add_feedback([feedback()])
    assert joined.join_status is JoinStatus.JOINED and joined.model == "m1"
    del event  # the state kept nothing of it: its answer is referenced only here now
    assert sys.getrefcount(answer) == before - 1
    assert "input" not in TraceAttributes.__slots__ and "output" not in TraceAttributes.__slots__
