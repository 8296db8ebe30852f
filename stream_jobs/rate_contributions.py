"""rate_contributions: what one enriched row adds to its rate windows, read once.

Each row of ``feedback.enriched`` is checked and read by :func:`contribution`
before it counts: its identity ``(project, event_id)``, its version, its base
window and its counts per dimension set, or the first field that makes it a row
the join would not have written (any Kafka client can write to the topic). The
rates (:mod:`thumbline.stream_jobs.bad_feedback_rates`) count the first and
dead-letter the second.

Classes: a row is ``implicit`` when its source is (copied, regenerated...),
else ``good`` or ``bad`` by label, else ``neutral`` (neutral, edit and custom
labels). ``total`` counts explicit feedback only, and ``bad_rate`` is
``bad / total``: implicit signals do not dilute it.

End users only, by default: a row whose ``annotator`` is not one of
``annotators`` (``THUMBLINE_RATES_ANNOTATORS``, default ``end_user``: not a
reviewer, an LLM judge or code) counts in no class, like a retracted one: it is
stored and shown, but a judge that finds everything bad raises no alert. A row
without an annotator (written before it existed) is an end user's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from thumbline.schemas._base import MAX_COMMENT_LEN, MAX_ID_LEN, MAX_NAME_LEN

ALL = "*"
END_USER = "end_user"
#: Whose feedback the rates count unless told otherwise (THUMBLINE_RATES_ANNOTATORS).
DEFAULT_ANNOTATORS: tuple[str, ...] = (END_USER,)
Dims = tuple[str, str, str, str]  # project, environment, model, capability; "*" is all


@dataclass(slots=True)
class Counts:
    good: int = 0
    bad: int = 0
    neutral: int = 0
    implicit: int = 0
    with_comment: int = 0
    score_sum: float = 0.0
    score_count: int = 0

    @property
    def total(self) -> int:
        return self.good + self.bad + self.neutral

    @property
    def bad_rate(self) -> float:
        return self.bad / self.total if self.total else 0.0

    def add(self, other: Counts, sign: int = 1) -> None:
        self.good += sign * other.good
        self.bad += sign * other.bad
        self.neutral += sign * other.neutral
        self.implicit += sign * other.implicit
        self.with_comment += sign * other.with_comment
        self.score_sum += sign * other.score_sum
        self.score_count += sign * other.score_count

    def empty(self) -> bool:
        return self.total == 0 and self.implicit == 0


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one feedback row adds to its windows (nothing when retracted)."""

    version: int
    start: float
    dims: tuple[Dims, Dims]
    counts: Counts
    sample: tuple[str, str] | None  # (trace_id, comment) of a bad row


#: What identifies a feedback event: (project, event_id), as in the ``feedback`` table.
EventKey = tuple[str, str]

#: Event times a window can hold: ClickHouse's DateTime range (1970 to 2106).
MIN_TS, MAX_TS = 0.0, 4_294_967_295.0
MAX_VERSION = 2**63 - 1
_MAX_TS_CHARS = 64  # an ISO 8601 time with microseconds and an offset is 32


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row the rates cannot count: its place in the message's array (-1: the message
    was one object), the field at fault (``row`` when it is not an object), and why."""

    index: int
    field: str
    error: str

    @property
    def reason(self) -> str:
        """The dead letter's reason: ``invalid_<field>`` (a bounded set, fit for a label)."""
        return f"invalid_{self.field}"


def _wrong(name: str, value: object, want: str) -> tuple[str, str]:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"
    return name, f"{name}: {shown} is not {want}"


def _wrong_name(*values: object) -> tuple[str, str]:
    names = ("project", "environment", "model", "capability")
    name, value = next((n, v) for n, v in zip(names, values, strict=True)
                       if type(v) is not str or len(v) > MAX_NAME_LEN)  # fmt: skip
    return _wrong(name, value, f"a string of at most {MAX_NAME_LEN} characters")


def contribution(
    row: Any, window: float, annotators: tuple[str, ...] = DEFAULT_ANNOTATORS
) -> tuple[EventKey, Contribution] | tuple[str, str]:
    """The identity of an enriched row and what it contributes (nothing unless its
    annotator is one of ``annotators``), or, for a row the join would not have written,
    ``(field, error)``: the first field at fault and what is wrong with it.

    Pure, and called once per row before anything counts; the checks are type tests
    and length bounds (a pydantic model per row would cost several times the counting).
    A ``ts`` without an offset is UTC, as ClickHouse reads it.
    """
    if type(row) is not dict:
        return _wrong("row", row, "a JSON object")
    get = row.get
    try:  # subscripts: the fields every row has, read at the least cost
        event_id, version, ts = row["event_id"], row["version"], row["ts"]
    except KeyError as exc:
        return str(exc.args[0]), f"{exc.args[0]}: missing (every enriched row has it)"
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LEN:
        return _wrong("event_id", event_id, f"a string of 1 to {MAX_ID_LEN} characters")
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        return _wrong("version", version, "a whole number from 0 to 2**63-1")
    if type(ts) is str and len(ts) <= _MAX_TS_CHARS:
        try:
            when = datetime.fromisoformat(ts)
        except ValueError:
            return _wrong("ts", ts, "an ISO 8601 time")
    elif isinstance(ts, datetime):
        when = ts
    else:
        return _wrong("ts", ts, "an ISO 8601 time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp()
    if not MIN_TS <= seconds < MAX_TS:
        return _wrong("ts", ts, "a time from 1970 to 2106")
    project, environment = get("project") or "", get("environment") or ""
    model, capability = get("model") or "", get("capability") or ""
    if not (type(project) is str and type(environment) is str and type(model) is str
            and type(capability) is str and len(project) <= MAX_NAME_LEN
            and len(environment) <= MAX_NAME_LEN and len(model) <= MAX_NAME_LEN
            and len(capability) <= MAX_NAME_LEN):  # fmt: skip
        return _wrong_name(project, environment, model, capability)
    retracted = get("retracted")
    if retracted is not None and type(retracted) is not bool and retracted not in (0, 1):
        return _wrong("retracted", retracted, "true or false")
    counts = Counts()
    sample = None
    if not retracted and (get("annotator") or END_USER) in annotators:
        label = get("label")
        comment = get("comment") or ""
        if type(comment) is not str or len(comment) > MAX_COMMENT_LEN:
            return _wrong("comment", comment, f"a string of at most {MAX_COMMENT_LEN} characters")
        if get("source") == "implicit":
            counts.implicit = 1
        elif label == "good":
            counts.good = 1
        elif label == "bad":
            trace_id = get("trace_id")
            if type(trace_id) is not str or len(trace_id) > MAX_ID_LEN:
                return _wrong("trace_id", trace_id, f"a string of at most {MAX_ID_LEN} characters")
            counts.bad = 1
            sample = (trace_id, comment)
        else:
            counts.neutral = 1
        counts.with_comment = 1 if comment else 0
        score = get("score")
        if score is not None:
            if type(score) not in (int, float) or not math.isfinite(score):
                return _wrong("score", score, "a finite number")
            counts.score_sum, counts.score_count = float(score), 1
    start = math.floor(seconds / window) * window
    dims = ((project, environment, model, ALL), (project, environment, ALL, capability))
    return (project, event_id), Contribution(version, start, dims, counts, sample)
