"""bad_feedback_rates: feedback counts per event-time window and dimensions.

Reads ``feedback.enriched`` (the join's output), so every count can be cut by
project, environment, model and capability. Two dimension sets per row:
``(project, environment, model, "*")`` and ``(project, environment, "*", capability)``.

Windows complete by the stream's progress, not by the clock
-----------------------------------------------------------
A tumbling base window of ``window`` seconds (default 60) on the feedback's
event time ``ts``, plus sliding windows (default 5 minutes and 1 hour) that are
sums of base windows and advance with them. A base window is *complete* when
the **watermark** (how far the join's input is stored, as the join's markers
on ``feedback.enriched`` say; see :mod:`thumbline.stream_jobs.rates_job`) has passed its
end by ``lateness``, and every row counted in it is stored (its offset on
``feedback.enriched`` is at or below the join's durable offset of its
partition). Then its rows are written and the alert rules judge it, once. A
stall, a lag or a backlog delays completion: nothing is dropped for being slow.

After completion
----------------
A row whose window is already complete (an old ``ts`` from a client, an orphan
corrected after its grace, a backfill of last month) makes the window *dirty*:
once that row is stored, the window is **recomputed from the** ``feedback``
**table** (deduplicated, so exact) and written again with a higher version,
with the sliding windows that hold it. Every completed window is also
*reconciled* with the table once, ``reconcile`` seconds of watermark after it
completed: that corrects what no row announces (a changed mind that moved an
event into another window). :attr:`RateState.late` counts the rows that came
after their window completed; none is lost.

Exact under failure
-------------------
Counts in open windows are idempotent: each event's contribution is kept under
its identity, ``(project, event_id)``, so the same row delivered twice counts
once and a newer version (a changed mind, a corrected orphan, a retraction)
replaces the older one. A restarted worker rebuilds its open windows from the
``feedback`` table event by event and its written ones as counts
(``rates_store.restore_rates``); the join's replay then counts once.

Bounded memory
--------------
Dimensions and event ids come from clients, so the state is capped: at most
``max_cells`` (window, dimensions) counters and ``max_events`` events counted
in open windows. A row that would pass either cap is left out of the rates
until its window is reconciled with the table, and counted in
:attr:`RateState.bound_hits` (a metric).

What a row counts as (its class, whose feedback counts, which rows are refused):
:mod:`thumbline.stream_jobs.rate_contributions`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from thumbline.schemas import RateWindow
from thumbline.stream_jobs.rate_contributions import (
    ALL,
    DEFAULT_ANNOTATORS,
    Contribution,
    Counts,
    Dims,
    EventKey,
    Rejected,
    contribution,
)

__all__ = ["ALL", "Counts", "Dims", "Ended", "RateState", "Source"]  # Counts, Dims: its vocabulary

#: Where an enriched row came from: (enriched partition, join partition), whose durable
#: offset says when the row is stored; -1 for rows read back from the store.
Source = Hashable
MAX_SAMPLES = 5


@dataclass(slots=True)
class _Window:
    counts: dict[Dims, Counts] = field(default_factory=lambda: defaultdict(Counts))
    #: bad rows for alerts: (identity, trace_id, comment), at most MAX_SAMPLES a dimension set
    samples: dict[Dims, list[tuple[EventKey, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    complete: bool = False  # written and judged; its events are no longer held
    events: set[EventKey] = field(default_factory=set)  # counted here, while open
    #: source -> highest offset of a row counted here (stored before completing)
    offsets: dict[Source, int] = field(default_factory=dict)
    reconcile_at: float = math.inf  # the watermark at which it is compared with the store


@dataclass(slots=True)
class Ended:
    """A base window that completed, or changed after: rows to write, windows to judge."""

    start: float
    rows: list[RateWindow]
    first_time: bool


class RateState:
    """The windows of one rates worker, completed by the watermark.

    Args:
        window: seconds of the tumbling base window.
        sliding: sizes of the sliding windows (multiples of ``window``).
        lateness: seconds of watermark a window waits after its end for rows
            whose ``ts`` is a little older than their arrival.
        history: seconds (of watermark) completed windows are kept for sliding
            sums and alert baselines.
        reconcile: seconds of watermark after completion at which each window
            is compared once with the ``feedback`` table.
        max_cells: most (window, dimensions) counters held.
        max_events: most events counted in open windows.
        annotators: whose feedback counts (the ``annotator`` values).
        clock: wall time in seconds (for versions; injectable for tests).
    """

    def __init__(
        self,
        *,
        window: float = 60.0,
        sliding: Iterable[float] = (300.0, 3600.0),
        lateness: float = 30.0,
        history: float = 7200.0,
        reconcile: float = 300.0,
        max_cells: int = 500_000,
        max_events: int = 5_000_000,
        annotators: Iterable[str] = DEFAULT_ANNOTATORS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.annotators = tuple(annotators)
        self.window = window
        self.sliding = tuple(sorted(s for s in sliding if s > window))
        for size in self.sliding:
            if size % window:
                raise ValueError(f"sliding window {size:g}s is not a multiple of {window:g}s")
        self.lateness = lateness
        self.history = max(history, *self.sliding, window)
        self.reconcile = reconcile
        self.max_cells = max_cells
        self.max_events = max_events
        self.clock = clock
        self.windows: dict[float, _Window] = {}
        self.seen: dict[EventKey, Contribution] = {}
        #: window start -> enriched partition -> highest offset of a row that came
        #: after the window completed: recomputed from the store once those are stored
        self.dirty: dict[float, dict[Source, int]] = {}
        self.watermark = -math.inf
        self.cells = 0  # (window, dimensions) counters held
        self.late = 0
        self.applied = 0
        self.bound_hits = 0
        self.invalid = 0  # rows rejected by contribution()

    def emptied(self) -> RateState:
        """A state with the same settings and nothing in it (to restore another share into)."""
        return RateState(
            window=self.window, sliding=self.sliding, lateness=self.lateness,
            history=self.history, reconcile=self.reconcile, max_cells=self.max_cells,
            max_events=self.max_events, annotators=self.annotators, clock=self.clock,
        )  # fmt: skip

    # Input ------------------------------------------------------------------

    def apply(
        self,
        rows: Iterable[Any],
        *,
        partition: Source = -1,
        offset: int = -1,
        rejected: list[Rejected] | None = None,
    ) -> set[float]:
        """Count enriched rows (from ``partition`` at ``offset`` of ``feedback.enriched``;
        -1: already stored). A row seen before counts once, a newer version replaces it.
        A row the join would not have written (see :func:`contribution`) counts nowhere:
        it is added to ``rejected`` with its index and counted in :attr:`invalid`.

        Returns:
            The starts of complete windows these rows made dirty (to be recomputed).
        """
        dirtied: set[float] = set()
        for index, row in enumerate(rows):
            read = contribution(row, self.window, self.annotators)
            if type(read[1]) is str:
                self.invalid += 1
                if rejected is not None:
                    rejected.append(Rejected(index, *read))
                continue
            event_id, new = cast(tuple[EventKey, Contribution], read)
            old = self.seen.get(event_id)
            if old is not None and old.version >= new.version:
                continue
            w = self.windows.get(new.start)
            done = w.complete if w is not None else self._completed(new.start)
            if done:
                if old is not None:  # it moved out of an open window into a complete one
                    self._remove(event_id, old)
                marks = self.dirty.setdefault(new.start, {})
                marks[partition] = max(marks.get(partition, -1), offset)
                dirtied.add(new.start)
                self.late += 1
                continue
            if w is None:
                w = self.windows[new.start] = _Window()
            if old is None and not self._room_for(new, w):
                self.bound_hits += 1
                continue
            if old is not None:
                self._remove(event_id, old)
            self._add(event_id, new, w)
            if offset >= 0:
                w.offsets[partition] = max(w.offsets.get(partition, -1), offset)
            self.applied += 1
        return dirtied

    def _completed(self, start: float) -> bool:
        return start + self.window + self.lateness <= self.watermark

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
            if c.sample is not None and len(w.samples[dims]) < MAX_SAMPLES:
                w.samples[dims].append((event_id, *c.sample))

    def _remove(self, event_id: EventKey, c: Contribution) -> None:
        w = self.windows.get(c.start)
        del self.seen[event_id]
        if w is None:
            return
        w.events.discard(event_id)
        for dims in c.dims:
            w.counts[dims].add(c.counts, -1)
            if c.sample is not None and dims in w.samples:  # retracted or changed: not a sample
                w.samples[dims] = [x for x in w.samples[dims] if x[0] != event_id]

    def restore_counts(self, start: float, dims: Dims, counts: Counts, *, recent: bool) -> None:
        """Counts of a window written before a restart, read back from the store: history
        for sliding windows and baselines. ``recent``: reconcile it with the table as soon as
        the watermark is known (it may have been written without its late rows)."""
        w = self.windows.get(start)
        if w is None:
            w = self.windows[start] = _Window(complete=True)
        if recent:
            w.reconcile_at = -math.inf
        if dims not in w.counts:
            if self.cells >= self.max_cells:
                self.bound_hits += 1
                return
            self.cells += 1
        w.counts[dims].add(counts)

    # Progress ---------------------------------------------------------------

    def advance(self, watermark: float, stored: Mapping[Source, int]) -> list[Ended]:
        """Complete the windows the watermark has passed (by ``lateness``) whose rows are
        all stored (``stored``: enriched partition -> the join's durable offset), in order;
        the rows to write for each. Then forget what is older than the history."""
        self.watermark = max(self.watermark, watermark)
        out: list[Ended] = []
        for start in sorted(self.windows):
            w = self.windows[start]
            if w.complete:
                continue
            if not self._completed(start) or any(
                offset > stored.get(partition, -1) for partition, offset in w.offsets.items()
            ):
                break  # in order: a later window never completes before this one
            w.complete = True
            w.reconcile_at = self.watermark + self.reconcile
            for event_id in w.events:
                self.seen.pop(event_id, None)
            w.events, w.offsets = set(), {}
            out.append(Ended(start, self._rows(start, set(w.counts)), True))
        horizon = self.watermark - self.history
        for start in [s for s, w in self.windows.items() if s + self.window <= horizon
                      and self._settled(s, w)]:  # fmt: skip
            self.cells -= len(self.windows.pop(start).counts)
        return out

    def _settled(self, start: float, w: _Window) -> bool:
        """Complete, and nothing left to recompute: it may be forgotten past the history."""
        return w.complete and start not in self.dirty and w.reconcile_at == math.inf

    def due(self, stored: Mapping[Source, int]) -> list[float]:
        """Complete windows to recompute from the store: dirty ones whose late rows are
        stored, and those whose reconciliation is due."""
        starts = {
            start for start, marks in self.dirty.items()
            if all(offset <= stored.get(partition, -1) for partition, offset in marks.items())
        }  # fmt: skip
        if self.watermark > -math.inf:  # reconciled only once the join has said where it is
            starts |= {s for s, w in self.windows.items() if w.reconcile_at <= self.watermark}
        return sorted(starts)

    def replace(self, found: Mapping[float, Mapping[Dims, Counts]], due: Iterable[float]) -> Ended:
        """Counts read from the store for the ``due`` windows and their neighbours (for the
        sliding sums): the rows to write. Open windows keep their own counts. A due window
        is written again whole; a neighbour where the store differs from memory too (it
        held rows since corrected), with zeros for dimensions it no longer has."""
        due = sorted(due)
        found = {**{start: {} for start in due}, **found}
        rewrite: dict[float, set[Dims]] = {}
        for start, counts in found.items():
            w = self.windows.get(start)
            if w is not None and not w.complete:
                continue
            if w is None:
                w = self.windows[start] = _Window(complete=True)
            old, dims = w.counts, set(w.counts) | set(counts)
            if start not in due:
                dims = {d for d in dims if old.get(d, Counts()) != counts.get(d, Counts())}
            if dims:
                rewrite[start] = dims
            self.cells += len(counts) - len(old)
            w.counts = defaultdict(Counts, {d: _copy(c) for d, c in counts.items()})
        for start in due:
            self.windows[start].reconcile_at = math.inf
            self.dirty.pop(start, None)
        rows: list[RateWindow] = []
        now = self.clock()
        for start, dims in sorted(rewrite.items()):
            w = self.windows[start]
            rows += [self._row(d, start, self.window, w.counts.get(d, Counts()), now) for d in dims]
            for later in [start, *self._later_complete(start)]:
                rows += self._sliding_rows(later, dims, now)
        return Ended(due[0] if due else 0.0, _unique(rows), False)

    def _rows(self, start: float, dims: Iterable[Dims]) -> list[RateWindow]:
        """The base window's rows and the sliding windows that end with it."""
        now, dims = self.clock(), list(dims)
        rows = [self._row(d, start, self.window, self.windows[start].counts[d], now) for d in dims]
        return rows + self._sliding_rows(start, dims, now)

    def _sliding_rows(self, start: float, dims: Iterable[Dims], now: float) -> list[RateWindow]:
        end = start + self.window
        return [
            self._row(d, end - size, size, self.total(d, end - size, end), now)
            for d in dims
            for size in self.sliding
        ]

    def _later_complete(self, start: float) -> list[float]:
        """Complete base windows after ``start`` whose sliding windows include it."""
        if not self.sliding:
            return []
        reach = start + max(self.sliding) - self.window
        return sorted(s for s, w in self.windows.items() if start < s <= reach and w.complete)

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
        found = [(trace_id, comment) for s, w in self.windows.items() if start <= s < end
                 for _, trace_id, comment in w.samples.get(dims, ())]  # fmt: skip
        found.sort(key=lambda x: not x[1])  # those with a comment first
        return found[:MAX_SAMPLES]

    def _row(self, d: Dims, start: float, size: float, c: Counts, now: float) -> RateWindow:
        return RateWindow.trusted(
            dict(
                schema_version=1, project=d[0], environment=d[1], model=d[2], capability=d[3],
                window_seconds=int(size), window_start=_utc(start), window_end=_utc(start + size),
                good=c.good, bad=c.bad, neutral=c.neutral, total=c.total,
                with_comment=c.with_comment, implicit=c.implicit, score_sum=c.score_sum,
                score_count=c.score_count,
                mean_score=c.score_sum / c.score_count if c.score_count else None,
                bad_rate=c.bad_rate, version=int(now * 1000),
            )
        )  # fmt: skip


def _copy(c: Counts) -> Counts:
    out = Counts()
    out.add(c)
    return out


def _unique(rows: list[RateWindow]) -> list[RateWindow]:
    """The last row per (dimensions, size, start): a sliding window reached twice is one row."""
    keyed = {(r.project, r.environment, r.model, r.capability, r.window_seconds,
              r.window_start): r for r in rows}  # fmt: skip
    return list(keyed.values())


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
