"""Score configs: what the values of one feedback name mean, decided once for every path.

A :class:`ScoreConfig` says, for a feedback ``name`` of a project, which kind
of value it carries (a rating or score in a range, a thumb, a bool, a
category) and which values are bad, neutral or good. The join applies it
(:func:`apply_config`) to every validated feedback event of that name, however
it came (SDK, gateway, a hosted product's shape, raw Kafka, OpenTelemetry):

- for a configured name **the value decides label and score**: a label or
  score the client sent is replaced, so a browser cannot call a 1-star rating
  good, and the same 1 means the same from every path;
- events of kind ``label``, ``text``, ``signal`` and ``correction``, and
  retractions, are left as they are (they carry no value to judge);
- a value the config does not admit (outside the range, an unknown category,
  not a number) is refused with a ValueError that says what to send;
- names without a config keep the derivation of :mod:`thumbline.schemas.feedback`.

The row records the config's ``version`` (``score_config_version``; 0: derived
without a config), so a new version changes new rows only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictFloat, field_validator, model_validator

from thumbline.schemas._base import MAX_LABEL_LEN, MAX_NAME_LEN, Contract
from thumbline.schemas.feedback import (
    BAD_AT_MOST,
    GOOD_AT_LEAST,
    FeedbackEvent,
    FeedbackKind,
    Label,
    Name,
    normal_label,
)

#: The most categories one config may list.
MAX_CATEGORIES = 200
MAX_DESCRIPTION_LEN = 2_000


class ScoreKind(StrEnum):
    RATING = "rating"
    SCORE = "score"
    THUMB = "thumb"
    BOOL = "bool"
    CATEGORY = "category"


#: The range a numeric kind takes when the config gives none.
DEFAULT_RANGES = {ScoreKind.RATING: (1.0, 5.0), ScoreKind.SCORE: (0.0, 1.0)}

#: Kinds whose events carry nothing a config judges: they pass unchanged.
UNJUDGED = frozenset({FeedbackKind.TEXT, FeedbackKind.SIGNAL, FeedbackKind.CORRECTION})


class ScoreConfig(Contract):
    """What the values of the feedback ``name`` in ``project`` mean.

    For ``rating`` and ``score``: ``range`` (default 1..5 and 0..1) and the
    thresholds in the value's own units: a value at most ``bad_at_most`` is bad,
    at least ``good_at_least`` good, anything between neutral. Defaults: the
    first and last quarter of the range (1-2 and 4-5 stars of 5), as for names
    without a config. For ``category``: ``categories`` maps each allowed
    category to its label (good, bad, neutral or a custom one); any other is
    refused.
    """

    schema_version: Literal[1] = 1
    project: Name = "default"
    name: Name
    kind: ScoreKind
    range: tuple[StrictFloat, StrictFloat] | None = Field(
        None, description="[low, high] of a rating or score; default 1..5 and 0..1."
    )
    bad_at_most: StrictFloat | None = Field(None, description="Values up to this are bad.")
    good_at_least: StrictFloat | None = Field(None, description="Values from this are good.")
    categories: dict[str, str] = Field(
        default_factory=dict, description="category -> label, for a category kind."
    )
    description: str = Field("", max_length=MAX_DESCRIPTION_LEN)
    #: One vote per person for this name (stream_jobs/votes.py), also when
    #: THUMBLINE_ONE_VOTE_PER_USER is off.
    one_vote_per_user: StrictBool = False
    version: int = Field(0, ge=0, description="Assigned when stored; 0: not stored yet.")

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_CATEGORIES:
            raise ValueError(f"at most {MAX_CATEGORIES} categories")
        out = {}
        for category, label in value.items():
            category, label = category.strip(), label.strip()
            if not 0 < len(category) <= MAX_NAME_LEN:
                raise ValueError(f"a category is 1-{MAX_NAME_LEN} characters")
            if not 0 < len(label) <= MAX_LABEL_LEN:
                raise ValueError(
                    f"category {category!r}: its label is 1-{MAX_LABEL_LEN} characters "
                    "(good, bad, neutral or a custom one)"
                )
            out[category] = normal_label(label) or label
        return out

    @model_validator(mode="after")
    def _consistent(self) -> ScoreConfig:
        numeric = self.kind in DEFAULT_RANGES
        if not numeric and (
            self.range is not None or self.bad_at_most is not None or self.good_at_least is not None
        ):
            raise ValueError(
                f"a {self.kind} takes no range or thresholds: they are for a rating or a score"
            )
        if self.kind is ScoreKind.CATEGORY and not self.categories:
            raise ValueError(
                "a category config needs its categories, e.g. categories = "
                '{hallucination = "bad", helpful = "good"}'
            )
        if self.kind is not ScoreKind.CATEGORY and self.categories:
            raise ValueError(f"a {self.kind} takes no categories: they are for a category kind")
        if numeric:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError("range must be [low, high] with low < high, e.g. [1, 5]")
            bad, good = self.thresholds
            for what, at in (("bad_at_most", bad), ("good_at_least", good)):
                if not (math.isfinite(at) and low <= at <= high):
                    raise ValueError(f"{what} {at:g} must lie in the range {low:g}..{high:g}")
            if bad >= good:
                raise ValueError(
                    f"bad_at_most ({bad:g}) must be below good_at_least ({good:g}): values "
                    "between them are neutral"
                )
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """[low, high] of a rating or score (the default when none is set)."""
        return self.range or DEFAULT_RANGES.get(self.kind, (0.0, 1.0))

    @property
    def thresholds(self) -> tuple[float, float]:
        """(bad_at_most, good_at_least) in the value's units, defaults filled in."""
        low, high = self.bounds
        bad = self.bad_at_most
        good = self.good_at_least
        if bad is None:
            bad = low + BAD_AT_MOST * (high - low)
        if good is None:
            good = low + GOOD_AT_LEAST * (high - low)
        return bad, good

    def definition(self) -> dict[str, Any]:
        """What the config says, without its identity and version: what is versioned."""
        return self.model_dump(
            mode="json", exclude={"schema_version", "project", "name", "version"}
        )

    def describe(self) -> str:
        """One line: ``a rating 1..5 (bad at most 2, good at least 4)``."""
        if self.kind in DEFAULT_RANGES:
            low, high = self.bounds
            bad, good = self.thresholds
            return f"a {self.kind} {low:g}..{high:g} (bad at most {bad:g}, good at least {good:g})"
        if self.kind is ScoreKind.CATEGORY:
            return "a category of " + ", ".join(
                f"{c}={label}" for c, label in sorted(self.categories.items())
            )
        return f"a {self.kind}"


def apply_config(config: ScoreConfig, event: FeedbackEvent) -> dict[str, Any]:
    """The fields of a validated ``event`` that ``config`` decides.

    Returns ``kind``, ``score``, ``label`` and ``score_config_version`` (and
    ``value`` or ``category`` where the config's kind normalises them); an empty
    dict for events the config does not judge (kinds text, signal and
    correction, and retractions). A bare label for a configured name is
    refused: the value decides the label, so a client cannot call a one-star
    rating good by sending ``label: good`` alone.

    Raises:
        ValueError: the value is not one the config admits; the message names
            the config and what to send.
    """
    if event.retracted or event.kind in UNJUDGED:
        return {}
    value = event.value
    kind = config.kind
    what = f"{config.name} is configured as {config.describe()}"
    if event.kind is FeedbackKind.LABEL:
        raise ValueError(f"{what}; send its value, not a label (got label {event.label!r})")
    out: dict[str, Any] = {"kind": FeedbackKind(kind.value), "score_config_version": config.version}
    if kind in DEFAULT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what}; send a number (got {value!r})")
        low, high = config.bounds
        if not low <= value <= high:
            raise ValueError(f"{what}; {value:g} is outside it")
        bad, good = config.thresholds
        out["score"] = round((value - low) / (high - low), 9)
        out["label"] = Label.BAD if value <= bad else Label.GOOD if value >= good else Label.NEUTRAL
    elif kind is ScoreKind.THUMB:
        thumb = _thumb(value)
        if thumb is None:
            raise ValueError(
                f"{what}; send 'up' or 'down' (or 1 / -1, true / false), got {value!r}"
            )
        out["value"] = thumb
        out["score"], out["label"] = (1.0, Label.GOOD) if thumb == "up" else (0.0, Label.BAD)
    elif kind is ScoreKind.BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{what}; send true or false (got {value!r})")
        out["score"], out["label"] = (1.0, Label.GOOD) if value else (0.0, Label.BAD)
    else:  # ScoreKind.CATEGORY
        category = value if isinstance(value, str) else event.category
        if category is None:
            raise ValueError(f"{what}; send the category as the value")
        label = config.categories.get(category)
        if label is None:
            label = {c.lower(): lab for c, lab in config.categories.items()}.get(category.lower())
        if label is None:
            known = ", ".join(sorted(config.categories))
            raise ValueError(f"{what}; {category!r} is not one of them: send one of {known}")
        out["category"] = category
        out["label"] = label
        out["score"] = {Label.GOOD: 1.0, Label.BAD: 0.0}.get(label)  # type: ignore[call-overload]
    return out


def _thumb(value: Any) -> str | None:
    if isinstance(value, str) and value.lower() in ("up", "down"):
        return value.lower()
    if value is True or (not isinstance(value, bool) and value == 1):
        return "up"
    if value is False or (not isinstance(value, bool) and value == -1):
        return "down"
    return None


class ScoreConfigIndex:
    """The latest config of each (project, name), for the join's lookups per event."""

    def __init__(self, configs: Iterable[ScoreConfig] = ()) -> None:
        self._by_key: dict[tuple[str, str], ScoreConfig] = {(c.project, c.name): c for c in configs}

    def __len__(self) -> int:
        return len(self._by_key)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def get(self, project: str, name: str | None) -> ScoreConfig | None:
        if name is None:
            return None
        return self._by_key.get((project, name))

    def configure(self, event: FeedbackEvent) -> FeedbackEvent:
        """``event`` with its config applied (ValueError: refused, see :func:`apply_config`).

        An event of a name without a config keeps what it derived, and
        ``score_config_version`` 0 whatever the client sent.
        """
        config = self.get(event.project, event.name)
        updates = apply_config(config, event) if config is not None else {}
        if updates:
            return event.model_copy(update=updates)
        if event.score_config_version:
            return event.model_copy(update={"score_config_version": 0})
        return event

    def configs(self) -> Mapping[tuple[str, str], ScoreConfig]:
        return dict(self._by_key)
