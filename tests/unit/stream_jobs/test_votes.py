"""One vote per person: the derived event id, and the version that decides the latest vote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from thumbline.schemas import FeedbackEvent, JoinStatus, TraceEvent
from thumbline.stream_jobs.enriched_rows import TraceAttributes, version_of
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.votes import one_vote, vote_id

T0 = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)


def thumb(value: str, *, at: datetime = T0, received: datetime = T0, **fields) -> FeedbackEvent:
    return FeedbackEvent.parse(
        {"trace_id": "t1", "kind": "thumb", "value": value, "ts": at, "received_at": received,
         "user_id": "ann", **fields}
    )  # fmt: skip


def always(project: str, name: str) -> bool:
    return True


def never(project: str, name: str) -> bool:
    return False


def test_a_persons_votes_on_one_trace_and_name_share_one_derived_id():
    up, down = one_vote(thumb("up"), always), one_vote(thumb("down"), always)
    assert up.event_id == down.event_id == vote_id("default", "trace", "t1", None, "thumb", "ann")


def test_the_vote_id_is_the_uuid5_of_its_parts_in_the_vote_namespace():
    from thumbline.stream_jobs.votes import _NAMESPACE

    examples = [("p", "trace", "t1", None, "thumb", "ann"), ("é", "session", "s", "sp", "n", "u")]
    for parts in examples:
        name = "\x1f".join(p or "" for p in parts)
        assert vote_id(*parts) == uuid.uuid5(_NAMESPACE, name).hex


def test_the_clients_own_event_id_is_kept_beside_the_derived_one():
    sent = thumb("up", event_id="click-1")
    voted = one_vote(sent, always)
    assert voted.client_event_id == "click-1" and voted.event_id != "click-1"
    assert one_vote(voted, always) == voted  # applied twice (a replay): the same event


def test_each_part_of_the_uniqueness_key_makes_another_vote():
    base = one_vote(thumb("up"), always).event_id
    others = [
        thumb("up", user_id="bob"),
        thumb("up", name="helpful"),
        thumb("up", trace_id="t2"),
        thumb("up", span_id="s1"),
        thumb("up", project="other"),
    ]
    ids = {one_vote(e, always).event_id for e in others}
    assert base not in ids and len(ids) == len(others)


def test_without_a_user_id_or_when_it_does_not_apply_every_event_stays_its_own():
    anonymous = thumb("up", user_id=None, event_id="e1")
    assert one_vote(anonymous, always) is anonymous
    named = thumb("up", event_id="e2")
    assert one_vote(named, never) is named


def test_the_hook_is_asked_per_project_and_feedback_name():
    asked: list[tuple[str, str]] = []

    def only_helpful(project: str, name: str) -> bool:
        asked.append((project, name))
        return name == "helpful"

    assert one_vote(thumb("up", name="helpful", project="p"), only_helpful).client_event_id
    assert one_vote(thumb("up", name="other", project="p"), only_helpful).client_event_id is None
    assert asked == [("p", "helpful"), ("p", "other")]


def test_a_retraction_by_the_same_person_of_the_same_name_retracts_the_vote():
    vote = one_vote(thumb("up"), always)
    sent = {"trace_id": "t1", "user_id": "ann", "name": "thumb", "retracted": True}
    retraction = one_vote(FeedbackEvent.parse({**sent, "received_at": T0}), always)
    assert retraction.event_id == vote.event_id and retraction.retracted


def test_a_later_vote_has_the_higher_version_whatever_order_it_arrives_in():
    later = one_vote(thumb("down", at=T0 + timedelta(seconds=1), received=T0), always)
    earlier = one_vote(thumb("up", at=T0, received=T0 + timedelta(seconds=5)), always)
    for status in JoinStatus:
        assert version_of(later, status) > version_of(earlier, status)


def test_the_join_keeps_the_later_vote_of_one_batch_when_the_trace_is_pending():
    state = JoinState(pending_row_seconds=0)
    later = one_vote(thumb("down", at=T0 + timedelta(seconds=1)), always)
    earlier = one_vote(thumb("up", at=T0), always)
    assert state.add_feedback([later, earlier]) == []
    [joined] = state.add_traces([TraceEvent.parse({"trace_id": "t1", "model": "m"})])
    assert (joined.label, joined.client_event_id) == ("bad", later.client_event_id)


def test_a_vote_on_a_conversation_is_keyed_by_the_conversation_not_a_trace():
    on_conversation = FeedbackEvent.parse(
        {"conversation_id": "c1", "user_id": "ann", "kind": "thumb", "value": "up"}
    )
    voted = one_vote(on_conversation, always)
    assert voted.event_id == vote_id("default", "conversation", "c1", None, "thumb", "ann")
    assert voted.event_id != one_vote(thumb("up", conversation_id="c1"), always).event_id


def test_feedback_on_a_conversation_waits_until_a_look_in_the_store_finds_its_trace():
    state = JoinState(pending_row_seconds=0)
    on_conversation = FeedbackEvent.parse(
        {"conversation_id": "c1", "project": "p", "label": "bad", "received_at": T0}
    )
    on_trace = thumb("up", trace_id="t-unknown", project="p")
    assert state.add_feedback([on_conversation, on_trace]) == []
    assert state.waiting_targets() == [("p", "conversation c1")]  # not the trace's key
    latest = TraceAttributes("t-latest", project="p", model="m-new", capability="support")
    [joined] = state.resolve({("p", "conversation c1"): latest})
    assert (joined.trace_id, joined.target, joined.model, joined.join_status) == (
        "", "conversation", "m-new", "joined",
    )  # fmt: skip
    assert state.waiting_targets() == [] and state.pending_count == 1


def test_a_score_config_turns_one_vote_per_person_on_for_its_name_and_project_only():
    from thumbline.schemas.score_configs import ScoreConfig
    from thumbline.stream_jobs.votes import votes_rule

    configs = [
        ScoreConfig.parse({"project": "p", "name": "helpful", "kind": "thumb",
                           "one_vote_per_user": True}),
        ScoreConfig.parse({"project": "p", "name": "stars", "kind": "rating"}),
    ]  # fmt: skip
    rule = votes_rule(configs, setting=False)
    assert rule is not None
    assert [rule("p", "helpful"), rule("p", "stars"), rule("q", "helpful")] == [True, False, False]
    assert votes_rule(configs[1:], setting=False) is None  # the join skips the rule
    everywhere = votes_rule(configs[1:], setting=True)
    assert everywhere is not None and everywhere("q", "anything")
