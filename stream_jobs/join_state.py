"""The join's state machine: feedback meets its trace, with no broker and no database.

``JoinState`` holds, per ``trace_id``, the merged attributes of its trace and
the feedback still waiting for it. It is fed micro-batches and returns the
enriched rows to write (:mod:`thumbline.stream_jobs.enriched_rows`: the row, and
the version that orders the states of one event); the Faust job
(``join_traces``) wraps it with Kafka and ClickHouse.

Feedback that has waited ``pending_row_seconds`` (2 s) for its trace is also
stored at once as a *pending* row (:meth:`JoinState.announce`), so a person sees
it, marked as waiting, instead of nothing for the whole grace. Its rank is the
lowest: the joined or orphan row of the same copy replaces it. A pending row
never hides a final one: none is made for a retraction, nor for a copy of an
event whose orphan row the state knows (a changed mind about an orphan keeps
showing the orphan until the new copy's outcome).

The grace period for a trace to arrive is measured in wall time from when the
feedback reached the join, not in event time: trace exporters lag in wall time,
and a replay of old events after an outage would otherwise orphan them all
before their traces, read a moment later, could match.

Tenant isolation: everything is keyed by ``(project, trace_id)``. Feedback of
project A joins only a trace of project A; a trace of another project with the
same ``trace_id`` is another trace.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from thumbline.schemas import EnrichedFeedback, FeedbackEvent, JoinStatus, TraceEvent
from thumbline.stream_jobs.enriched_rows import (
    DEFAULT_PROJECT,
    TraceAttributes,
    enrich,
    shared,
    version_of,
)


def _nones() -> Iterator[None]:
    while True:
        yield None


#: What identifies a trace: (project, trace_id).
Key = tuple[str, str]


def key_of(event: FeedbackEvent | TraceEvent) -> Key:
    """The trace an event belongs to: its project and trace id."""
    return (event.project or DEFAULT_PROJECT, event.join_key)


@dataclass(slots=True)
class Pending:
    event: FeedbackEvent
    deadline: float
    ref: Any = None  # the caller's handle on the input it came from (released when emitted)


class JoinState:
    """Traces and waiting feedback of the partitions one worker owns, by (project, trace_id).

    Every structure is bounded, and :attr:`bound_hits` counts, per structure,
    what a bound cost: traces by the retention and ``max_traces`` (past it the
    oldest are forgotten: the store still has them, and a lookup finds them
    when feedback comes); correctable orphans by the retention and
    ``max_orphans`` (the oldest are forgotten: a late trace no longer corrects
    them); feedback waiting for its trace by ``max_pending`` events (the
    longest-waiting is emitted as an orphan before its grace ends, and a late
    trace still corrects it).

    Args:
        grace_seconds: how long feedback waits for its trace before it is
            emitted as an orphan (wall time; default 10 minutes).
        retention_seconds: how long a trace's attributes, and orphans that
            may still be corrected, are kept after their last update (7 days).
        max_pending: most feedback events held waiting for their traces.
        max_traces: most traces held.
        max_orphans: most traces with correctable orphans held.
        pending_row_seconds: how long feedback waits before :meth:`announce`
            returns a pending row for it (wall time; 0: at the next call).
        clock: wall time in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        grace_seconds: float = 600.0,
        retention_seconds: float = 7 * 86400.0,
        max_pending: int = 1_000_000,
        max_traces: int = 5_000_000,
        max_orphans: int = 1_000_000,
        pending_row_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.grace = grace_seconds
        self.retention = retention_seconds
        self.max_pending = max_pending
        self.max_traces = max_traces
        self.max_orphans = max_orphans
        self.pending_row_seconds = pending_row_seconds
        self.clock = clock
        self.traces: dict[Key, TraceAttributes] = {}
        self.pending: dict[Key, dict[str, Pending]] = {}  # key -> event_id -> entry
        self.pending_count = 0
        self.orphans: dict[Key, dict[str, FeedbackEvent]] = {}  # may still be corrected
        #: what the bounds cost: feedback orphaned early (pending), traces and
        #: orphans forgotten before their retention ended (traces, orphans)
        self.bound_hits: dict[str, int] = {"pending": 0, "traces": 0, "orphans": 0}
        self._released: list[Any] = []
        # (deadline, key) in the order feedback was held: deadlines only grow,
        # so expiry looks at the front instead of every held trace on each tick.
        self._deadlines: deque[tuple[float, Key]] = deque()
        # (when due, key, event_id, entry) of held feedback, in the order it was held:
        # announce() looks at the front only, as expire() does.
        self._unannounced: deque[tuple[float, Key, str, Pending]] = deque()
        self._next_sweep = 0.0  # retention sweeps (a scan of the state) at most every minute
        # keys of conversations and sessions that feedback waited for (some no longer)
        self._targets: set[Key] = set()

    def add_traces(self, events: Iterable[TraceEvent]) -> list[EnrichedFeedback]:
        """Merge trace events; emit waiting feedback (joined) and orphans (corrected)."""
        now = self.clock()
        touched: set[Key] = set()
        for event in events:
            key = key_of(event)
            attrs = self.traces.get(key)
            if attrs is None:
                key = (shared(key[0]), key[1])
                attrs = self.traces[key] = TraceAttributes(event.trace_id, project=key[0])
            attrs.merge(event, now)
            touched.add(key)
        out: list[EnrichedFeedback] = []
        for key in touched:
            attrs = self.traces[key]
            waiting = self.pending.pop(key, {})
            self.pending_count -= len(waiting)
            for entry in waiting.values():
                out.append(enrich(entry.event, attrs, JoinStatus.JOINED))
                self._released.append(entry.ref)
            for orphan in self.orphans.pop(key, {}).values():
                out.append(enrich(orphan, attrs, JoinStatus.CORRECTED))
        self._trim(self.traces, self.max_traces, "traces")
        return out

    def _trim(self, table: dict[Key, Any], bound: int, name: str) -> None:
        """Forget the oldest entries of ``table`` past ``bound`` (and 1% more, so
        that a table at its bound is not trimmed on every call)."""
        if len(table) <= bound:
            return
        excess = len(table) - bound + bound // 100
        for key in list(itertools.islice(table, excess)):
            del table[key]
        self.bound_hits[name] += excess

    def add_feedback(
        self, events: Iterable[FeedbackEvent], refs: Iterable[Any] | None = None
    ) -> list[EnrichedFeedback]:
        """Emit feedback whose trace is known; hold the rest until its trace or the grace ends.

        ``refs`` (one per event, optional) are handed back by :meth:`take_released`
        once the held event has been emitted or superseded, so the caller knows
        when the input that carried it may be acknowledged.
        """
        now = self.clock()
        out: list[EnrichedFeedback] = []
        for event, ref in zip(events, refs if refs is not None else _nones(), strict=False):
            key = key_of(event)
            attrs = self.traces.get(key)
            if attrs is not None:
                out.append(enrich(event, attrs, JoinStatus.JOINED))
                continue
            waiting = self.pending.setdefault(key, {})
            if " " in key[1]:  # a conversation or session: its traces are on other partitions
                self._targets.add(key)
            previous = waiting.get(event.event_id)
            if previous is None or version_of(event, JoinStatus.JOINED) >= version_of(
                previous.event, JoinStatus.JOINED
            ):
                if previous is not None:
                    self._released.append(previous.ref)
                else:
                    self.pending_count += 1
                entry = waiting[event.event_id] = Pending(event, now + self.grace, ref)
                self._deadlines.append((now + self.grace, key))
                self._unannounced.append(
                    (now + self.pending_row_seconds, key, event.event_id, entry)
                )  # fmt: skip
            else:
                self._released.append(ref)  # an older copy of what is already held
        if self.pending_count > self.max_pending:
            out.extend(self._orphan_oldest(self.pending_count - self.max_pending))
        return out

    def _orphan_oldest(self, count: int) -> list[EnrichedFeedback]:
        """Emit the ``count`` longest-waiting feedback events as orphans (the bound is hit)."""
        out: list[EnrichedFeedback] = []
        for key in list(self.pending):  # dicts keep insertion order: oldest first
            if len(out) >= count:
                break
            out.extend(self._orphan(key, self.pending[key], lambda _entry: True))
        self.bound_hits["pending"] += len(out)
        return out

    def _orphan(
        self, key: Key, waiting: dict[str, Pending], due: Callable[[Pending], bool]
    ) -> list[EnrichedFeedback]:
        out: list[EnrichedFeedback] = []
        for event_id, entry in list(waiting.items()):
            if due(entry):
                del waiting[event_id]
                self.pending_count -= 1
                out.append(enrich(entry.event, None, JoinStatus.ORPHAN))
                self._released.append(entry.ref)
                self.orphans.setdefault(key, {})[event_id] = entry.event
        if not waiting:
            self.pending.pop(key, None)
        self._trim(self.orphans, self.max_orphans, "orphans")
        return out

    def announce(self) -> list[EnrichedFeedback]:
        """Pending rows for the feedback that has waited ``pending_row_seconds`` since the
        copy held now arrived; one per held copy, at most once.

        A pending row carries the feedback's own fields (as an orphan does) and the
        lowest version of its copy, so the joined or orphan row replaces it. None is
        made where it would hide a final row of the event: for a retraction (the store
        drops a retracted row's event at once), and for an event whose orphan row this
        state knows (an earlier copy; the new copy replaces it when it is emitted).
        """
        now = self.clock()
        out: list[EnrichedFeedback] = []
        queue = self._unannounced
        while queue and queue[0][0] <= now:
            _, key, event_id, entry = queue.popleft()
            if self.pending.get(key, {}).get(event_id) is not entry:
                continue  # emitted, superseded by a later copy, or moved to another worker
            event = entry.event
            if event.retracted or event_id in self.orphans.get(key, ()):
                continue
            out.append(enrich(event, None, JoinStatus.PENDING))
        return out

    def add_orphans(self, events: Iterable[FeedbackEvent]) -> None:
        """Remember orphans emitted before a restart, so a late trace still corrects them."""
        for event in events:
            self.orphans.setdefault(key_of(event), {})[event.event_id] = event
        self._trim(self.orphans, self.max_orphans, "orphans")

    def add_known_traces(self, found: dict[Key, TraceAttributes]) -> None:
        """Traces looked up in the store (the state did not hold them)."""
        now = self.clock()
        for key, attrs in found.items():
            if key not in self.traces:
                attrs.seen_at = now
                self.traces[key] = attrs
        self._trim(self.traces, self.max_traces, "traces")

    def waiting_targets(self) -> list[Key]:
        """The conversations and sessions that feedback is waiting for.

        Their traces are routed by their own trace ids, to any partition, so no trace
        event here ever completes them: the caller looks them up in the store from time
        to time and hands what it finds to :meth:`resolve`.
        """
        self._targets &= self.pending.keys()
        return list(self._targets)

    def resolve(self, found: dict[Key, TraceAttributes]) -> list[EnrichedFeedback]:
        """Join the feedback waiting for the traces (or conversations) looked up in ``found``."""
        now = self.clock()
        out: list[EnrichedFeedback] = []
        for key, attrs in found.items():
            attrs.seen_at = now
            self.traces[key] = attrs
            waiting = self.pending.pop(key, {})
            self.pending_count -= len(waiting)
            for entry in waiting.values():
                out.append(enrich(entry.event, attrs, JoinStatus.JOINED))
                self._released.append(entry.ref)
        return out

    def forget(self, moved: Callable[[str], bool]) -> None:
        """Drop the traces, waiting feedback and orphans of trace ids for which ``moved`` is true.

        For partitions another worker now holds: their waiting feedback is not
        released (its input stays unacknowledged, and the new holder replays it).
        """
        for table in (self.traces, self.pending, self.orphans):
            for key in [k for k in table if moved(k[1])]:
                if table is self.pending:
                    self.pending_count -= len(self.pending[key])
                del table[key]

    def take_released(self) -> list[Any]:
        """The refs of held events emitted or superseded since the last call."""
        released, self._released = self._released, []
        return [r for r in released if r is not None]

    def expire(
        self, found: Callable[[list[Key]], dict[Key, TraceAttributes]] | None = None
    ) -> list[EnrichedFeedback]:
        """Emit as orphans the feedback whose grace ended, and forget stale traces.

        ``found`` looks up traces the state no longer holds (older than the
        retention, or from before a restart) in the store, for a batch of keys,
        before any feedback is called an orphan.
        """
        now = self.clock()
        due: dict[Key, None] = {}  # ordered, unique
        while self._deadlines and self._deadlines[0][0] <= now:
            key = self._deadlines.popleft()[1]
            waiting = self.pending.get(key)
            if waiting and min(p.deadline for p in waiting.values()) <= now:
                due[key] = None
        out: list[EnrichedFeedback] = []
        if due and found is not None:
            out.extend(self.resolve(found(list(due))))
        for key in due:
            waiting = self.pending.get(key)
            if waiting:
                out.extend(self._orphan(key, waiting, lambda entry: entry.deadline <= now))
        if now >= self._next_sweep:
            self._sweep(now)
        return out

    def _sweep(self, now: float) -> None:
        """Forget traces and correctable orphans older than the retention."""
        self._next_sweep = now + min(60.0, self.retention / 10)
        horizon = now - self.retention
        for key in [k for k, a in self.traces.items() if a.seen_at < horizon]:
            del self.traces[key]
        for key in [
            k for k, o in self.orphans.items()
            if all(self._received(e) < horizon for e in o.values())
        ]:  # fmt: skip
            del self.orphans[key]

    @staticmethod
    def _received(event: FeedbackEvent) -> float:
        return (event.received_at or event.ts).timestamp()

    def next_deadline(self) -> float | None:
        """When the next held feedback becomes an orphan, if any is held."""
        deadlines = [p.deadline for w in self.pending.values() for p in w.values()]
        return min(deadlines) if deadlines else None

    def stats(self) -> dict[str, Any]:
        return {
            "traces": len(self.traces),
            "pending": self.pending_count,
            "orphans": sum(len(o) for o in self.orphans.values()),
        }
