"""One vote per person: a person's feedback of one name on one target is one row.

With one vote per person on (``THUMBLINE_ONE_VOTE_PER_USER``, or a score
config's ``one_vote_per_user`` flag for that feedback name), the join gives a
feedback event that carries a ``user_id`` the id of its *vote*:

    event_id = uuid5(project, target, target id, span_id, name, user_id)

so a person who changes a thumb replaces their earlier vote, in the ``feedback``
table (ReplacingMergeTree by ``event_id``) and in the rate windows (keyed by
``(project, event_id)``), whatever path the event came by (SDK, gateway, raw
Kafka, OpenTelemetry, a vendor's shape). The client's own ``event_id`` is kept in
``client_event_id``. A retraction by the same person of the same target and name
(it must carry the name) retracts the vote. An event without a ``user_id`` stays
its own row: nobody can tell two anonymous clicks apart from two people.

Which vote is the latest is decided by the event time ``ts`` (the person's click),
not by when it was received (see :func:`thumbline.stream_jobs.enriched_rows.version_of`):
two votes in one batch, or a retry of the earlier one after the later, still
leave the later click.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable

from thumbline.schemas import FeedbackEvent
from thumbline.schemas.score_configs import ScoreConfig

#: Whether one vote per person applies to feedback of this (project, name).
OneVote = Callable[[str, str], bool]

_NAMESPACE = uuid.UUID("7d6c3f4e-1a0b-5c1e-9e55-0e7a1b5d9c21")
_NAMESPACE_BYTES = _NAMESPACE.bytes
_SEP = "\x1f"  # unit separator: in no id (ids hold no whitespace, names are text)


def votes_rule(configs: Iterable[ScoreConfig], setting: bool) -> OneVote | None:
    """When one vote per person applies: to every name with the setting
    (``THUMBLINE_ONE_VOTE_PER_USER``), else to the names whose score config says
    ``one_vote_per_user``; None when to none (the join then skips the rule)."""
    if setting:
        return lambda project, name: True
    voted = {(c.project, c.name) for c in configs if c.one_vote_per_user}
    if not voted:
        return None
    return lambda project, name: (project, name) in voted


def vote_id(
    project: str, target: str, target_id: str, span_id: str | None, name: str, user_id: str
) -> str:
    """The event id of a person's vote of ``name`` on a target: ``uuid5`` in the vote
    namespace, as hex like the ids the SDK generates."""
    name_bytes = _SEP.join((project, target, target_id, span_id or "", name, user_id)).encode()
    # uuid.uuid5() by hand: the same bytes at half the cost (no UUID object) on the hot path
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name_bytes, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest[:16].hex()


def one_vote(event: FeedbackEvent, applies: OneVote) -> FeedbackEvent:
    """``event`` as a vote when one vote per person ``applies`` to it; else ``event`` itself.

    Idempotent: a vote given again (a replay, a forward) is returned unchanged.
    """
    user = event.user_id
    if not user:
        return event
    project, name = event.project or "default", event.name or ""
    if not applies(project, name):
        return event
    target = event.target or "trace"
    target_id = {"conversation": event.conversation_id, "session": event.session_id}.get(
        target, event.trace_id
    )
    derived = vote_id(project, target, target_id or "", event.span_id, name, user)
    if derived == event.event_id:
        return event
    # A copy of a validated event with two ids changed: trusted() costs a tenth of
    # model_copy(), which was as dear as validating the event.
    fields = dict(event.__dict__)
    fields["client_event_id"] = event.client_event_id or event.event_id
    fields["event_id"] = derived
    return FeedbackEvent.trusted(fields)
