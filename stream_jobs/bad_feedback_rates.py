"""bad_feedback_rates: feedback counts per event-time window and dimensions.

Reads ``feedback.enriched`` (the join's output), so every count can be cut by
project, environment, model and capability. Two dimension sets per row:
``(project, environment, model, "*")`` and ``(project, environment, "*", capability)``.

Windows
-------
A tumbling base window of ``window`` seconds (default 60) on the feedback's
event time ``ts``, plus sliding windows (default 5 minutes and 1 hour) that are
sums of base windows and advance with them. A base window *ends* at
``start + window`` (wall time): its rows are emitted and the alert rules run.
It stays open for ``lateness`` seconds more: a late row re-emits the window
(a higher ``version`` replaces the earlier row in ``feedback_rates``). Then it
*closes*; a row for a closed window is counted in ``late`` and left out.

Exact under failure
-------------------
Counts are idempotent: each event's contribution is kept under its identity,
``(project, event_id)``, while its window is open, so the same row delivered twice counts
once, a newer version (a changed mind, an orphan corrected, a retraction)
replaces the older one, and a replay after a crash changes nothing. A
restarted worker rebuilds its windows from the deduplicated ``feedback`` table
(see ``rates_job.restore_rates``): the recent ones event by event, and every
window from then on held open (:meth:`RateState.hold`) until the stream has
caught up, then for one more lateness period, so the join's replay still
lands in them however long the restart took; older ones as counts, for the
sliding windows and the alert baselines. So after a kill -9,
window counts equal what the ``feedback`` table says for the same windows.

Bounded memory
--------------
Dimensions and event ids come from clients, so the state is capped: at most
``max_cells`` (window, dimensions) counters and ``max_events`` events counted
in open windows. A row that would pass either cap is left out of the rates
and counted in :attr:`RateState.bound_hits` (a metric); it is in ``feedback``
as always. Event times are bounded at ingest, so no window lies far ahead.

Classes: a row is ``implicit`` when its source is (copied, regenerated...),
else ``good`` or ``bad`` by label, else ``neutral`` (neutral, edit and custom
labels). ``total`` counts explicit feedback only, and ``bad_rate`` is
``bad / total``: implicit signals do not dilute it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import RateWindow

ALL = "*"
Dims = tuple[str, str, str, str]  # project, environment, model, capability; "*" is all
MAX_SAMPLES = 5


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


def contribution(row: dict[str, Any], window: float) -> tuple[EventKey, Contribution]:
    """The identity of an enriched row and what it contributes."""
    ts = row["ts"]
    when = ts.timestamp() if isinstance(ts, datetime) else datetime.fromisoformat(ts).timestamp()
    start = math.floor(when / window) * window
    project, environment = row.get("project") or "", row.get("environment") or ""
    dims = (
        (project, environment, row.get("model") or "", ALL),
        (project, environment, ALL, row.get("capability") or ""),
    )
    counts = Counts()
    sample = None
    if not row.get("retracted"):
        label = row.get("label")
        comment = row.get("comment") or ""
        if row.get("source") == "implicit":
            counts.implicit = 1
        elif label == "good":
            counts.good = 1
        elif label == "bad":
            counts.bad = 1
            sample = (row["trace_id"], comment)
        else:
            counts.neutral = 1
        counts.with_comment = 1 if comment else 0
        if row.get("score") is not None:
            counts.score_sum, counts.score_count = float(row["score"]), 1
    key = (project, row["event_id"])
    return key, Contribution(int(row["version"]), start, dims, counts, sample)


@dataclass(slots=True)
class _Window:
    counts: dict[Dims, Counts] = field(default_factory=lambda: defaultdict(Counts))
    samples: dict[Dims, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    dirty: set[Dims] = field(default_factory=set)
    ended: bool = False
    closes_at: float = 0.0  # wall time after which rows for it are late
    events: set[EventKey] = field(default_factory=set)  # counted here, while open


@dataclass(slots=True)
class Ended:
    """A base window that just ended (or changed later): rows to write, windows to judge."""

    start: float
    rows: list[RateWindow]
    first_time: bool


class RateState:
    """The windows of the partitions one worker owns.

    Args:
        window: seconds of the tumbling base window.
        sliding: sizes of the sliding windows (multiples of ``window``).
        lateness: seconds a window stays open after it ends.
        history: seconds of closed windows kept for sliding sums and baselines.
        max_cells: most (window, dimensions) counters held.
        max_events: most events counted in open windows.
        clock: wall time in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        window: float = 60.0,
        sliding: Iterable[float] = (300.0, 3600.0),
        lateness: float = 30.0,
        history: float = 7200.0,
        max_cells: int = 500_000,
        max_events: int = 5_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_cells = max_cells
        self.max_events = max_events
        self.cells = 0  # (window, dimensions) counters held
        self.bound_hits = 0
        self.sliding = tuple(sorted(s for s in sliding if s > window))
        for size in self.sliding:
            if size % window:
                raise ValueError(f"sliding window {size:g}s is not a multiple of {window:g}s")
        self.lateness = lateness
        self.history = max(history, *self.sliding, window)
        self.clock = clock
        self.windows: dict[float, _Window] = {}
        self.seen: dict[EventKey, Contribution] = {}
        self.late = 0
        self.applied = 0
        self._held_since: float | None = None  # windows from here on held open...
        self._hold_until = 0.0  # ...until then (set by resume())

    # Input ------------------------------------------------------------------

    def apply(self, rows: Iterable[dict[str, Any]]) -> None:
        """Count enriched rows; a row seen before counts once, a newer version replaces it."""
        now = self.clock()
        for row in rows:
            event_id, new = contribution(row, self.window)
            old = self.seen.get(event_id)
            if old is not None and old.version >= new.version:
                continue
            target = self._window_for(new.start, now)
            if target is None:
                self.late += 1
                continue
            if old is None and not self._room_for(new, target):
                self.bound_hits += 1
                continue
            if old is not None:
                self._remove(event_id, old)
            self._add(event_id, new, target)
            self.applied += 1

    def _window_for(self, start: float, now: float) -> _Window | None:
        held = self._held_since is not None and start >= self._held_since and now < self._hold_until
        w = self.windows.get(start)
        if w is None:
            end = start + self.window
            if end + self.lateness <= now and not held:
                return None
            if end <= now - self.history:
                return None
            closes_at = max(end, now) + self.lateness
            w = self.windows[start] = _Window(
                closes_at=max(closes_at, self._hold_until) if held else closes_at
            )
        elif w.closes_at <= now and not held:
            return None
        elif held:
            w.closes_at = max(w.closes_at, self._hold_until)
        return w

    def hold(self, since: float) -> None:
        """At a restart: windows from ``since`` on take every row until :meth:`resume`.

        Among them are windows that ended while no worker ran, or while this one
        was starting, whose rows the join had not written yet: its replay must
        land in them rather than count as late.
        """
        self._held_since = since // self.window * self.window
        self._hold_until = math.inf

    def hold_open(self) -> None:
        """Hold every window that is open now, and any later one (see :meth:`hold`).

        Closed windows stay closed: their events are forgotten, so a replayed
        row could not be told from a new one there.
        """
        now = self.clock()
        since = min((s for s, w in self.windows.items() if w.closes_at > now), default=now)
        if self._held_since is not None and self._hold_until > now:
            since = min(since, self._held_since)  # a hold still running keeps its start
        self.hold(since)
        for start, w in self.windows.items():
            if start >= since and w.closes_at > now:
                w.closes_at = math.inf  # until resume(): then one lateness period more

    def resume(self) -> None:
        """The stream has caught up: held windows, and any the rest of the replay
        opens, take rows for one more lateness period, then close as usual."""
        if self._held_since is None or self._hold_until != math.inf:
            return
        self._hold_until = self.clock() + self.lateness
        for start, w in self.windows.items():
            if start >= self._held_since and w.closes_at == math.inf:
                w.closes_at = max(start + self.window + self.lateness, self._hold_until)

    def _room_for(self, c: Contribution, w: _Window) -> bool:
        """Whether a new event fits in the caps (a newer version of one counted always does)."""
        if len(self.seen) >= self.max_events:
            return False
        return self.cells + sum(dims not in w.counts for dims in c.dims) <= self.max_cells

    def _add(self, event_id: EventKey, c: Contribution, w: _Window) -> None:
        self.seen[event_id] = c
        w.events.add(event_id)
        for dims in c.dims:
            if dims not in w.counts:
                self.cells += 1
            w.counts[dims].add(c.counts)
            w.dirty.add(dims)
            if c.sample is not None and len(w.samples[dims]) < MAX_SAMPLES:
                w.samples[dims].append(c.sample)

    def _remove(self, event_id: EventKey, c: Contribution) -> None:
        w = self.windows.get(c.start)
        del self.seen[event_id]
        if w is None:
            return
        w.events.discard(event_id)
        for dims in c.dims:
            w.counts[dims].add(c.counts, -1)
            w.dirty.add(dims)

    def restore_counts(self, start: float, dims: Dims, counts: Counts) -> None:
        """Counts of a window this job wrote before a restart, read back from the store:
        history for sliding windows and baselines, not written again."""
        w = self.windows.get(start)
        if w is None:
            w = self.windows[start] = _Window(ended=True, closes_at=0.0)
        if dims not in w.counts:
            if self.cells >= self.max_cells:
                self.bound_hits += 1
                return
            self.cells += 1
        w.counts[dims].add(counts)

    # Time -------------------------------------------------------------------

    def advance(self) -> list[Ended]:
        """End and close windows by the clock; the rows to write for each change."""
        now = self.clock()
        out: list[Ended] = []
        for start in sorted(self.windows):
            w = self.windows[start]
            end = start + self.window
            if end > now:
                break
            first = not w.ended
            if first or w.dirty:
                dims = set(w.counts) if first else set(w.dirty)
                w.ended = True
                w.dirty.clear()
                rows = self._rows(start, dims, now)
                if not first:  # sliding rows already written that sum this window
                    for later in self._later_ended(start):
                        rows.extend(self._sliding_rows(later, dims, now))
                out.append(Ended(start, rows, first))
            if w.closes_at <= now and w.events:
                for event_id in w.events:
                    self.seen.pop(event_id, None)
                w.events = set()  # samples stay: at most five per dimensions, for alerts
        horizon = now - self.history
        for start in [s for s in self.windows if s + self.window <= horizon]:
            self.cells -= len(self.windows.pop(start).counts)
        return out

    def _rows(self, start: float, dims: Iterable[Dims], now: float) -> list[RateWindow]:
        """The base window's rows and the sliding windows that end with it."""
        version = int(now * 1000)
        dims = list(dims)
        rows = [
            self._row(d, start, self.window, self.windows[start].counts[d], version) for d in dims
        ]
        return rows + self._sliding_rows(start, dims, now)

    def _sliding_rows(self, start: float, dims: Iterable[Dims], now: float) -> list[RateWindow]:
        version = int(now * 1000)
        end = start + self.window
        return [
            self._row(d, end - size, size, self.total(d, end - size, end), version)
            for d in dims
            for size in self.sliding
        ]

    def _later_ended(self, start: float) -> list[float]:
        """Base windows after ``start``, already ended, whose sliding windows include it."""
        if not self.sliding:
            return []
        reach = start + max(self.sliding) - self.window
        return sorted(s for s, w in self.windows.items() if start < s <= reach and w.ended)

    def total(self, dims: Dims, start: float, end: float) -> Counts:
        """Counts of ``dims`` summed over the base windows in [start, end)."""
        out = Counts()
        for s, w in self.windows.items():
            if start <= s < end and dims in w.counts:
                out.add(w.counts[dims])
        return out

    def dims_between(self, start: float, end: float) -> set[Dims]:
        return {d for s, w in self.windows.items() if start <= s < end for d in w.counts}

    def samples(self, dims: Dims, start: float, end: float) -> list[tuple[str, str]]:
        found = [x for s, w in self.windows.items() if start <= s < end for x in w.samples[dims]]
        found.sort(key=lambda x: not x[1])  # those with a comment first
        return found[:MAX_SAMPLES]

    def _row(self, d: Dims, start: float, size: float, c: Counts, version: int) -> RateWindow:
        return RateWindow.trusted(
            dict(
                schema_version=1, project=d[0], environment=d[1], model=d[2], capability=d[3],
                window_seconds=int(size), window_start=_utc(start), window_end=_utc(start + size),
                good=c.good, bad=c.bad, neutral=c.neutral, total=c.total,
                with_comment=c.with_comment, implicit=c.implicit, score_sum=c.score_sum,
                score_count=c.score_count,
                mean_score=c.score_sum / c.score_count if c.score_count else None,
                bad_rate=c.bad_rate, version=version,
            )
        )  # fmt: skip


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
