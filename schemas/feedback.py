"""FeedbackEvent: what an end user said or did about an answer (topic ``feedback``).

Label and score
---------------
Every event carries a ``label`` (``good``, ``bad``, ``neutral`` or a custom
string such as ``edit``) and, where one makes sense, a normalised ``score`` in
[0, 1]. A label sent by the client always wins; otherwise both are derived from
``kind`` and ``value``:

==========  ======================================  ===========================  ==========
kind        value                                   score                        label
==========  ======================================  ===========================  ==========
thumb       ``"up"``/``"down"`` (also 1/-1, bools)  up 1.0, down 0.0             good / bad
rating      a number in ``range`` (default 1..5)    (v - lo) / (hi - lo)         see below
score       a number in ``range`` (default 0..1)    (v - lo) / (hi - lo)         see below
bool        true / false                            1.0 / 0.0                    good / bad
text        free text (also the comment)            none                         neutral
category    a category string                       none                         bad for a known
                                                                                 issue category,
                                                                                 else neutral
signal      none (an implicit action)               none                         neutral
correction  the corrected answer                    none                         edit
label       none: the label is sent directly        good 1.0, bad 0.0, else none as sent
==========  ======================================  ===========================  ==========

For ``rating`` and ``score``: a normalised score of at most ``BAD_AT_MOST``
(0.25: 1-2 stars out of 5) is ``bad``, at least ``GOOD_AT_LEAST`` (0.75: 4-5
stars) is ``good``, anything between is ``neutral``. A ``score`` without a range
whose value lies outside 0..1 keeps no normalised score and is ``neutral``.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    field_validator,
    model_validator,
)

from thumbline.schemas._base import (
    MAX_COMMENT_LEN,
    MAX_CORRECTION_LEN,
    MAX_ID_LEN,
    MAX_LABEL_LEN,
    MAX_METADATA_BYTES,
    MAX_NAME_LEN,
    MAX_TAG_LEN,
    MAX_TAGS,
    Contract,
    check_nested,
    settle_times,
    utc_now,
)

BAD_AT_MOST = 0.25
GOOD_AT_LEAST = 0.75

#: Categories that name a problem with the answer: a ``category`` event with one
#: of these values is labelled ``bad`` unless the client sends a label.
ISSUE_CATEGORIES = frozenset(
    {
        "incorrect",
        "incomplete",
        "off-topic",
        "off_topic",
        "hallucination",
        "wrong_policy",
        "missing_context",
        "harmful",
        "unsafe",
        "outdated",
        "too-long",
        "too_long",
        "irrelevant",
    }
)

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=r"^\S+$")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]


class FeedbackKind(StrEnum):
    THUMB = "thumb"
    RATING = "rating"
    SCORE = "score"
    BOOL = "bool"
    TEXT = "text"
    CATEGORY = "category"
    SIGNAL = "signal"
    CORRECTION = "correction"
    LABEL = "label"


#: Names other products use for the same kinds (Axiom's ``number`` and ``enum``).
KIND_ALIASES = {"number": "score", "enum": "category", "boolean": "bool", "stars": "rating"}

DEFAULT_RANGES: dict[FeedbackKind, tuple[float, float]] = {
    FeedbackKind.RATING: (1.0, 5.0),
}


class Label(StrEnum):
    GOOD = "good"
    BAD = "bad"
    NEUTRAL = "neutral"
    EDIT = "edit"


_LABELS = frozenset(label.value for label in Label)


class Source(StrEnum):
    EXPLICIT = "explicit"
    IMPLICIT = "implicit"


class Annotator(StrEnum):
    """Who gave the feedback. Rates and alerts count ``end_user`` feedback unless
    ``THUMBLINE_RATES_ANNOTATORS`` says otherwise."""

    END_USER = "end_user"  # the person who got the answer
    REVIEWER = "reviewer"  # a person reviewing answers (annotation queue, QA)
    EVALUATOR = "evaluator"  # an LLM judge or another model
    CODE = "code"  # a deterministic check (a test, a regex, a validator)


class Target(StrEnum):
    """What feedback is about: the answer of a trace, or a whole conversation or session."""

    TRACE = "trace"
    CONVERSATION = "conversation"
    SESSION = "session"


def target_key(target: str | None, trace_id: str | None, conversation_id: str | None,
               session_id: str | None) -> str:  # fmt: skip
    """What the join keys and routes feedback by: the trace id, or for a conversation or
    session ``"conversation <id>"``/``"session <id>"`` (a space: in no id, so no trace
    id can be the same string)."""
    if target == Target.CONVERSATION and conversation_id:
        return f"conversation {conversation_id}"
    if target == Target.SESSION and session_id:
        return f"session {session_id}"
    if trace_id:
        return trace_id
    if conversation_id:
        return f"conversation {conversation_id}"
    return f"session {session_id or ''}"


class FeedbackEvent(Contract):
    """One piece of feedback about the answer a trace produced: an end user's, unless
    ``annotator`` says a reviewer, an evaluator or code gave it."""

    schema_version: Literal[1] = Field(1, description="Contract version.")

    event_id: Id = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="The client's idempotency key: the same id sent again replaces the earlier "
        "value. Generated when absent.",
    )
    client_event_id: Id | None = Field(
        None,
        description="Set by the join when one vote per person applies: the event_id the client "
        "sent, while event_id becomes the vote's (project, target, name, user_id). The "
        "gateway drops a value sent to it.",
    )
    trace_id: Id | None = Field(
        None,
        description="The trace that produced the answer. Absent: the feedback is about a whole "
        "conversation (conversation_id) or session (session_id).",
    )
    target: Target | None = Field(
        None,
        description="What the feedback is about: trace, conversation or session. Derived: trace "
        "when trace_id is given, else conversation, else session.",
    )
    span_id: Id | None = Field(None, description="A span of the trace; absent: the whole trace.")
    name: Name | None = Field(
        None, description="What is measured: response-quality, star-rating... Default: the kind."
    )
    kind: FeedbackKind | None = Field(
        None, description="thumb, rating, score, bool, text, category, signal, correction, label."
    )
    value: StrictBool | float | str | None = Field(None, description="Depends on the kind.")
    range: tuple[StrictFloat, StrictFloat] | None = Field(
        None, description="[low, high] of a rating or score; default 1..5 for ratings, 0..1 scores."
    )
    label: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_LABEL_LEN,
        description="good, bad, neutral, or custom (edit...). Derived when absent.",
    )
    score: StrictFloat | None = Field(
        None, ge=0.0, le=1.0, description="Normalised score in [0, 1]; derived when absent."
    )
    comment: str | None = Field(None, max_length=MAX_COMMENT_LEN)
    correction: str | None = Field(
        None, max_length=MAX_CORRECTION_LEN, description="Expected output or the user's edit."
    )
    category: Name | None = None
    tags: tuple[Annotated[str, Field(min_length=1, max_length=MAX_TAG_LEN)], ...] = Field(
        (), max_length=MAX_TAGS
    )
    source: Source | None = Field(None, description="explicit or implicit; derived from the kind.")
    annotator: Annotator = Field(
        Annotator.END_USER,
        description="Who gave it: end_user (default), reviewer, evaluator (an LLM judge) or code. "
        "Rates and alerts count end_user feedback by default. The HTTP gateway sets it from the "
        "API key: a key without an annotator writes end_user only.",
    )
    retracted: StrictBool = Field(
        False, description="true withdraws the feedback with this event_id (a JSON boolean)."
    )
    score_config_version: int = Field(
        0,
        ge=0,
        description="The version of the score config that decided label and score; 0: none. "
        "Set by the stream (thumbline.schemas.score_configs): a value sent is replaced.",
    )
    user_id: Id | None = None
    session_id: Id | None = None
    conversation_id: Id | None = None
    project: Name = Field(
        "default",
        description="The project the feedback belongs to: part of its identity (with event_id), "
        "and it joins only a trace of the same project. Absent: 'default'. The gateway sets it "
        "from the API key.",
    )
    environment: Name | None = Field(None, description="Normally inherited from the trace.")
    capability: Name | None = None
    step: Name | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form JSON: at most 5 levels of objects, 2 of arrays, "
        f"{MAX_METADATA_BYTES} bytes.",
    )
    ts: datetime = Field(default_factory=utc_now, description="Event time, with a timezone.")
    received_at: datetime | None = Field(None, description="Stamped by the ingest point.")

    @property
    def join_key(self) -> str:
        """The key the join holds and routes this feedback by (:func:`target_key`)."""
        trace_id = self.trace_id
        if trace_id and self.target is Target.TRACE:  # nearly every event: no call
            return trace_id
        return target_key(self.target, self.trace_id, self.conversation_id, self.session_id)

    @field_validator("kind", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        # On the field, not the model: a model "before" validator makes pydantic
        # build a dict of every JSON message first (a third of the validation).
        if isinstance(value, str):
            kind = value.strip().lower()
            if kind in KIND_ALIASES:
                return KIND_ALIASES[kind]
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return normal_label(value)

    @field_validator("range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return check_range(value)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        return check_value(value)

    @model_validator(mode="after")
    def _derive(self) -> FeedbackEvent:
        event = self
        settle_times(event, ("ts", "received_at"))
        if event.metadata:
            try:
                check_nested(event.metadata, "metadata", MAX_METADATA_BYTES)
            except ValueError as exc:
                raise ValueError(f"metadata: {exc}") from None
        updates = derive(event)
        target = derive_target(event.target, event.trace_id, event.conversation_id,
                               event.session_id)  # fmt: skip
        if target is not event.target:
            updates["target"] = target
        # The instance is not published yet: fill the derived fields in place
        # (model_copy costs more than the whole validation on the stream's hot path).
        for name, value in updates.items():
            object.__setattr__(event, name, value)
        return event


# The checks of single fields, shared with the msgspec prototype (bench/fast_prototype.py),
# so the two paths cannot drift apart.


def normal_label(value: str | None) -> str | None:
    """The known labels in lower case; a custom label as sent."""
    if value is None:
        return None
    lowered = value.lower()
    return lowered if lowered in _LABELS else value


def check_range(value: tuple[float, float] | None) -> tuple[float, float] | None:
    """Refuse a range that is not finite ``[low, high]`` with low < high (ValueError)."""
    if value is not None:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError("range must be [low, high] with low < high, e.g. [1, 5]")
    return value


def check_value(value: Any) -> Any:
    """Refuse a value that is not a finite number, or a string too long (ValueError)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, str) and len(value) > MAX_CORRECTION_LEN:
        raise ValueError(f"is longer than {MAX_CORRECTION_LEN} characters")
    return value


def derive_target(
    target: Target | None, trace_id: str | None, conversation_id: str | None,
    session_id: str | None,
) -> Target:  # fmt: skip
    """The target an event names, or the one its ids imply (ValueError when it has none)."""
    if target is None:
        if trace_id:
            return Target.TRACE
        if conversation_id:
            return Target.CONVERSATION
        if session_id:
            return Target.SESSION
        raise ValueError(
            "trace_id: give the trace the feedback is about, or a conversation_id or "
            "session_id for feedback on a whole conversation or session"
        )
    needs = {Target.TRACE: ("trace_id", trace_id),
             Target.CONVERSATION: ("conversation_id", conversation_id),
             Target.SESSION: ("session_id", session_id)}[target]  # fmt: skip
    if not needs[1]:
        raise ValueError(f"target: feedback on a {target} needs its {needs[0]}")
    if target is not Target.TRACE and trace_id:
        raise ValueError(
            f"target: feedback on a whole {target} carries no trace_id; leave target out "
            "for feedback on the trace"
        )
    return target


class FeedbackFields(Protocol):
    """What :func:`derive` reads: a FeedbackEvent, or the fast decoder's struct."""

    @property
    def kind(self) -> FeedbackKind | None: ...
    @property
    def value(self) -> bool | float | str | None: ...
    @property
    def range(self) -> tuple[float, float] | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def score(self) -> float | None: ...
    @property
    def comment(self) -> str | None: ...
    @property
    def correction(self) -> str | None: ...
    @property
    def category(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def source(self) -> Source | None: ...
    @property
    def retracted(self) -> bool: ...


def derive(event: FeedbackFields) -> dict[str, Any]:
    """Check ``value`` against ``kind`` and fill what the client left out.

    ``event`` has its single fields checked already (``label`` normalised by
    :func:`normal_label`).

    Returns the fields to update: kind, value (normalised), name, label, score,
    source, comment, correction, category.
    """
    kind = event.kind or _infer_kind(event)
    value = event.value
    out: dict[str, Any] = {}
    score: float | None = None
    label: str | None = None

    if kind is FeedbackKind.THUMB:
        value = _thumb(value)
        score, label = (1.0, Label.GOOD) if value == "up" else (0.0, Label.BAD)
    elif kind in (FeedbackKind.RATING, FeedbackKind.SCORE):
        if isinstance(value, bool) or not isinstance(value, float | int):
            raise ValueError(f"value: a {kind} needs a number (got {value!r})")
        low, high = event.range or DEFAULT_RANGES.get(kind, (0.0, 1.0))
        if event.range is not None or kind is FeedbackKind.RATING:
            if not low <= value <= high:
                raise ValueError(f"value: {value:g} is outside the range [{low:g}, {high:g}]")
            score = (value - low) / (high - low)
        elif 0.0 <= value <= 1.0:
            score = float(value)
        if score is None:
            label = Label.NEUTRAL
        elif score <= BAD_AT_MOST:
            label = Label.BAD
        elif score >= GOOD_AT_LEAST:
            label = Label.GOOD
        else:
            label = Label.NEUTRAL
    elif kind is FeedbackKind.BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"value: a bool needs true or false (got {value!r})")
        score, label = (1.0, Label.GOOD) if value else (0.0, Label.BAD)
    elif kind is FeedbackKind.TEXT:
        if value is None and event.comment is None:
            raise ValueError("value: a text feedback needs a value or a comment")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"value: a text needs a string (got {value!r})")
        if event.comment is None:
            if len(value) > MAX_COMMENT_LEN:  # type: ignore[arg-type]
                raise ValueError(f"value: longer than {MAX_COMMENT_LEN} characters")
            out["comment"] = value
        label = Label.NEUTRAL
    elif kind is FeedbackKind.CATEGORY:
        category = value if value is not None else event.category
        if not isinstance(category, str) or not category:
            raise ValueError("value: a category needs the category as a non-empty string")
        if len(category) > 128:
            raise ValueError("value: a category is at most 128 characters")
        if event.category is None:
            out["category"] = category
        label = Label.BAD if category.lower() in ISSUE_CATEGORIES else Label.NEUTRAL
    elif kind is FeedbackKind.SIGNAL:
        if value is not None:
            raise ValueError(
                f"value: a signal carries no value (got {value!r}); put details in metadata"
            )
        label = Label.NEUTRAL
    elif kind is FeedbackKind.CORRECTION:
        text = event.correction if event.correction is not None else value
        if not isinstance(text, str) or not text:
            raise ValueError(
                "correction: a correction needs the corrected answer in correction or value"
            )
        if event.correction is None:
            out["correction"] = text
        label = Label.EDIT
    else:  # FeedbackKind.LABEL
        if event.label is None and event.retracted:
            label = "retracted"
        elif event.label is None:
            raise ValueError("label: a label feedback needs a label: good, bad, neutral or custom")
        if value is not None:
            raise ValueError("value: a label feedback carries no value; use another kind")

    final_label = event.label or label
    if event.score is None:
        if score is None and kind is FeedbackKind.LABEL:
            score = {Label.GOOD: 1.0, Label.BAD: 0.0}.get(final_label)  # type: ignore[call-overload]
        if score is not None:
            out["score"] = round(score, 9)
    out["kind"] = kind
    if value != event.value:
        out["value"] = value
    if event.name is None:
        out["name"] = kind.value
    if event.label is None:
        out["label"] = str(label)
    if event.source is None:
        out["source"] = Source.IMPLICIT if kind is FeedbackKind.SIGNAL else Source.EXPLICIT
    return out


def _infer_kind(event: FeedbackFields) -> FeedbackKind:
    value = event.value
    if value is None:
        if event.label is not None or event.retracted:
            return FeedbackKind.LABEL
        if event.correction is not None:
            return FeedbackKind.CORRECTION
        if event.comment is not None:
            return FeedbackKind.TEXT
        raise ValueError(
            "kind: the event says nothing: give a kind (thumb, rating, score, bool, text, "
            "category, signal, correction), a label or a value"
        )
    if isinstance(value, bool):
        return FeedbackKind.BOOL
    if isinstance(value, float | int):
        return FeedbackKind.RATING if event.range is None and value > 1 else FeedbackKind.SCORE
    return FeedbackKind.TEXT


def _thumb(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("up", "down"):
        return value.lower()
    if value is True or value == 1:
        return "up"
    if value is False or value == -1:
        return "down"
    raise ValueError(
        f"value: a thumb needs 'up' or 'down' (or 1 / -1, true / false), got {value!r}"
    )
