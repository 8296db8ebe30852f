"""spike_alerts: fire when a bad-feedback rate is significantly above its own baseline.

Runs each time a base window ends (:mod:`thumbline.stream_jobs.bad_feedback_rates`). For
every rule and every set of dimensions it compares the bad rate of the rule's
window with the trailing baseline of the same dimensions (the ``baseline``
seconds before the window). It fires only when all of these hold:

- at least ``min_total`` explicit feedback and ``min_bad`` bad ones in the window;
- the Wilson lower bound of the window's bad rate (at ``z``, 3.0 by default:
  about one chance in 700 that noise alone gets there) is above
  ``max(baseline x min_ratio, baseline + min_delta)``, or above the rule's
  ``threshold`` when one is set. The baseline starts at ``prior_rate`` (as if
  ``prior_total`` events had that rate), so a project's first busy minute is
  judged against something.

So 2 bad out of 2 never pages anyone: ``min_total`` stops it first, and its
Wilson lower bound at z=3 is only 0.18.

Hysteresis: one ``firing`` event when it starts (the lower bound at ``z``
clears the bar); it holds while a window has at least ``min_total`` feedback
and its lower bound at the looser ``hold_z`` (1.5) still clears the bar, and
one ``resolved`` event comes after ``resolve_after`` windows in a row that do
not: the rate is back within the baseline's band, or too little feedback
came to say otherwise. While it fires it is judged against the baseline from
before the onset, so that a long spike does not become its own baseline; but
after ``max_age`` (30 minutes) against the trailing baseline again, so a rate
that settles at a new level ends the episode instead of firing forever. Then
``cooldown`` seconds before the same rule and dimensions can fire again. The state lives in
the ``alerts`` table too, so a restarted worker knows what is firing and does
not fire it again (:meth:`SpikeDetector.restore`).

Rules come from a TOML file (``THUMBLINE_ALERT_RULES``); without one,
:data:`DEFAULT_RULES` apply. Example::

    [[rule]]
    name = "bad-rate-spike"
    dimensions = "model"          # or "capability"
    window = 300                  # seconds; a multiple of the base window
    baseline = 3600
    min_total = 30
    min_bad = 8
    min_ratio = 2.0
    min_delta = 0.10
    z = 3.0
    hold_z = 1.5
    resolve_after = 2
    max_age = 1800
    cooldown = 600
    projects = ["checkout"]       # optional: only these projects
    threshold = 0.5               # optional: an absolute bar, whatever the baseline
    snooze_until = 2026-12-01T00:00:00Z   # optional
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thumbline.schemas import Alert, AlertState
from thumbline.schemas.errors import ThumblineError
from thumbline.stream_jobs.bad_feedback_rates import ALL, Counts, Dims, RateState


class RulesError(ThumblineError):
    """The alert rules file is missing, not TOML, or a rule is invalid."""

    retriable = False


class AlertRule(BaseModel):
    """One spike rule; see the module docstring for what each field does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    dimensions: Literal["model", "capability"] = "model"
    window: float = Field(300.0, gt=0)
    baseline: float = Field(3600.0, gt=0)
    min_total: int = Field(30, ge=1)
    min_bad: int = Field(5, ge=1)
    min_ratio: float = Field(2.0, ge=1.0)
    min_delta: float = Field(0.10, ge=0.0, le=1.0)
    z: float = Field(3.0, gt=0)
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    prior_rate: float = Field(0.1, ge=0.0, le=1.0)
    prior_total: int = Field(50, ge=0)
    hold_z: float = Field(1.5, gt=0)
    resolve_after: int = Field(2, ge=1)
    max_age: float = Field(1800.0, gt=0)
    cooldown: float = Field(600.0, ge=0)
    projects: tuple[str, ...] = ()
    snooze_until: datetime | None = None

    def applies_to(self, dims: Dims) -> bool:
        by_model = dims[3] == ALL
        if by_model != (self.dimensions == "model"):
            return False
        return not self.projects or dims[0] in self.projects


DEFAULT_RULES = (
    AlertRule(name="bad-rate-spike", dimensions="model"),
    AlertRule(name="bad-rate-spike-capability", dimensions="capability"),
)


def load_rules(path: Path | None, base_window: float) -> tuple[AlertRule, ...]:
    """The rules of a TOML file (``[[rule]]`` tables), or the defaults without one."""
    rules: tuple[AlertRule, ...]
    if path is None:
        rules = DEFAULT_RULES
    else:
        try:
            data = tomllib.loads(path.read_text())
            rules = tuple(AlertRule.model_validate(r) for r in data.get("rule", []))
        except OSError as exc:
            raise RulesError(f"cannot read the alert rules {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{path} is not TOML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RulesError(f"{path}: rule field {where}: {first['msg']}") from None
        if not rules:
            raise RulesError(f"{path} has no [[rule]] table")
    for rule in rules:
        if rule.window % base_window or rule.baseline % base_window:
            raise RulesError(
                f"{path or 'built-in rules'}: rule {rule.name}: window and baseline must be "
                "multiples of the base window "
                f"({base_window:g}s; THUMBLINE_RATE_WINDOW_SECONDS)"
            )
    return rules


def wilson_bounds(bad: int, total: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of bad / total at ``z`` standard deviations."""
    if total == 0:
        return 0.0, 1.0
    p = bad / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


@dataclass(frozen=True, slots=True)
class Verdict:
    breach: bool  # significantly above the bar: starts an alert
    held: bool  # above the bar at hold_z, with enough feedback: keeps a firing alert
    rate: float
    baseline: float
    lower: float
    window: Counts


def judge(rule: AlertRule, window: Counts, baseline: Counts) -> Verdict:
    """Is this window's bad rate a spike against the baseline, for this rule?"""
    prior_bad = rule.prior_rate * rule.prior_total
    base_rate = (baseline.bad + prior_bad) / (baseline.total + rule.prior_total or 1)
    lower, _ = wilson_bounds(window.bad, window.total, rule.z)
    bar = max(base_rate * rule.min_ratio, base_rate + rule.min_delta)
    if rule.threshold is not None:
        bar = min(bar, rule.threshold)
    enough = window.total >= rule.min_total and window.bad >= rule.min_bad
    held = window.total >= rule.min_total and wilson_bounds(
        window.bad, window.total, rule.hold_z
    )[0] > bar  # fmt: skip
    return Verdict(enough and lower > bar, held, window.bad_rate, base_rate, lower, window)


@dataclass(slots=True)
class _Track:
    firing: bool = False
    alert_id: str = ""
    onset: float = 0.0
    quiet: int = 0  # windows in a row without the condition, while firing
    cooldown_until: float = 0.0


@dataclass(slots=True)
class SpikeDetector:
    """Alert state per rule and dimensions; :meth:`evaluate` after each base window ends.

    Only tracks with state are kept (firing, or cooling down after they
    resolved), at most ``max_tracks``: past that, a new spike is not tracked
    and :attr:`bound_hits` counts it.
    """

    rules: tuple[AlertRule, ...]
    tracks: dict[tuple[str, Dims], _Track] = field(default_factory=dict)
    max_tracks: int = 10_000
    bound_hits: int = 0

    def evaluate(self, rates: RateState, end: float, now: float) -> list[Alert]:
        """Judge every rule on the windows that end at ``end``; the alerts that change state."""
        out: list[Alert] = []
        for rule in self.rules:
            if rule.snooze_until is not None and now < rule.snooze_until.timestamp():
                continue
            start = end - rule.window
            candidates = rates.dims_between(start, end) | {
                dims for (name, dims), t in self.tracks.items() if name == rule.name and t.firing
            }
            for dims in sorted(d for d in candidates if rule.applies_to(d)):
                key = (rule.name, dims)
                track = self.tracks.get(key) or _Track()
                window = rates.total(dims, start, end)
                # While firing, compare with the baseline before the onset: a trailing
                # one would absorb a long spike and resolve it while it still goes on.
                # Past max_age, with the trailing one: a new level ends the episode.
                young = track.firing and track.onset and end - track.onset < rule.max_age
                until = track.onset if young else start
                baseline = rates.total(dims, until - rule.baseline, until)
                verdict = judge(rule, window, baseline)
                if key not in self.tracks and not self._room(track, verdict, now):
                    continue
                alert = self._step(rule, dims, track, verdict, start, end, now, rates)
                if alert is not None:
                    out.append(alert)
                if track.firing or track.cooldown_until > now:
                    self.tracks[key] = track
                else:
                    self.tracks.pop(key, None)  # no state left: a fresh track is the same
        return out

    def _room(self, track: _Track, verdict: Verdict, now: float) -> bool:
        """Whether a new track may fire: false (and counted) when the bound is reached."""
        if not verdict.breach or now < track.cooldown_until or len(self.tracks) < self.max_tracks:
            return True
        self.bound_hits += 1
        return False

    def _step(
        self, rule: AlertRule, dims: Dims, track: _Track, verdict: Verdict,
        start: float, end: float, now: float, rates: RateState,
    ) -> Alert | None:  # fmt: skip
        if not track.firing:
            if not verdict.breach or now < track.cooldown_until:
                return None
            track.firing, track.onset, track.quiet = True, start, 0
            track.alert_id = alert_id(rule.name, dims, start)
            return _alert(rule, dims, track, AlertState.FIRING, verdict, start, end, now, rates)
        if verdict.breach or verdict.held:
            track.quiet = 0
            return None
        track.quiet += 1
        if track.quiet < rule.resolve_after:
            return None
        track.firing = False
        track.cooldown_until = now + rule.cooldown
        return _alert(rule, dims, track, AlertState.RESOLVED, verdict, start, end, now, rates)

    def restore(self, alerts: Iterable[dict[str, Any]]) -> None:
        """The latest state of each alert, read back from the store at start.

        A firing alert goes on firing (it does not fire again); a resolved one
        keeps its cool-down from when it resolved (``at``).
        """
        cooldowns = {rule.name: rule.cooldown for rule in self.rules}
        for a in alerts:
            dims = (a["project"], a["environment"], a["model"], a["capability"])
            track = self.tracks.setdefault((a["rule"], dims), _Track())
            track.alert_id = a["alert_id"]
            track.firing = a["state"] == AlertState.FIRING
            track.onset = a["window_start"].timestamp()
            if not track.firing and a.get("at") is not None:
                track.cooldown_until = a["at"].timestamp() + cooldowns.get(a["rule"], 0.0)

    def firing(self) -> list[tuple[str, Dims]]:
        return [key for key, t in self.tracks.items() if t.firing]


def alert_id(rule: str, dims: Dims, onset: float) -> str:
    """Stable for one episode: the same rule, dimensions and first window."""
    text = "|".join((rule, *dims, f"{onset:.3f}"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def inbox_command(dims: Dims, start: float, end: float) -> str:
    """The ``thumbline inbox`` command that lists the window's bad feedback."""
    parts = ["thumbline inbox --label bad"]
    for option, value in zip(("project", "environment", "model", "capability"), dims, strict=True):
        if value and value != ALL:
            parts.append(f"--{option} {_quote(value)}")
    parts.append(f"--from {_iso(start)} --to {_iso(end)}")
    return " ".join(parts)


def _quote(value: str) -> str:
    safe = value.replace("-", "").replace("_", "").replace(".", "").isalnum()
    return value if safe else "'" + value.replace("'", "'\\''") + "'"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _alert(
    rule: AlertRule, dims: Dims, track: _Track, state: AlertState, verdict: Verdict,
    start: float, end: float, now: float, rates: RateState,
) -> Alert:  # fmt: skip
    samples = rates.samples(dims, start, end)
    return Alert.trusted(
        dict(
            schema_version=1, project=dims[0], environment=dims[1], model=dims[2],
            capability=dims[3], window_seconds=int(rule.window),
            window_start=datetime.fromtimestamp(start, UTC),
            window_end=datetime.fromtimestamp(end, UTC), alert_id=track.alert_id,
            rule=rule.name, state=state, bad_rate=round(verdict.rate, 6),
            baseline_rate=round(verdict.baseline, 6), bad=verdict.window.bad,
            total=verdict.window.total, sample_trace_ids=tuple(t for t, _ in samples),
            sample_comments=tuple(c for _, c in samples if c),
            inbox_command=inbox_command(dims, start, end),
            at=datetime.fromtimestamp(now, UTC), version=int(now * 1000),
        )
    )  # fmt: skip
