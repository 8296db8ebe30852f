"""rates_acks: when the rates job may acknowledge an enriched message.

A message is acknowledged, in offset order per partition, once what it changed
is safe without it: once the join says its rows are stored (its offset is at or
below the join's durable offset, from the markers), which is at once for rows
counted in open windows (a restart rebuilds those from the ``feedback`` table,
and the join replays what it had not stored); for a late row only after its
window was recomputed too (no restart would know to recompute it). A message
that held nothing to count (a marker, a dead letter already written) waits only
for those before it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: (enriched partition, join partition) -> (watermark in seconds, durable offset)
Marks = Mapping[tuple[int, int], tuple[float, int]]


@dataclass(slots=True, eq=False)
class Held:
    """An input message and the windows it made dirty (it is acknowledged when none is left)."""

    event: Any
    dirty: set[float] = field(default_factory=set)
    #: the rows it holds, where from and at which offset (None: nothing to wait for)
    rows: list[dict[str, Any]] = field(default_factory=list)
    source: tuple[int, int] | None = None
    offset: int = -1


class HeldMessages:
    """The messages not acknowledged yet, per topic partition, in offset order."""

    def __init__(self) -> None:
        self.queues: dict[Any, deque[Held]] = defaultdict(deque)

    def hold(self, event: Any) -> Held:
        """Keep a faust event until :meth:`release` acknowledges it (not after its batch)."""
        event.message.incref()
        held = Held(event)
        self.queues[event.message.tp].append(held)
        return held

    def __iter__(self) -> Iterator[Held]:
        for queue in self.queues.values():
            yield from queue

    def release(self, marks: Marks) -> None:
        """Acknowledge, in order, what is stored and recomputed: a replay after a restart
        or a rebalance brings back whatever the store did not have yet."""
        for queue in self.queues.values():
            while queue and not queue[0].dirty and _stored(queue[0], marks):
                queue.popleft().event.ack()

    def recomputed(self, dirty: Collection[float], marks: Marks) -> None:
        """Windows not in ``dirty`` are recomputed and written: the messages whose late rows
        they held may be acknowledged."""
        left = set(dirty)
        for held in self:
            if held.dirty:
                held.dirty &= left
        self.release(marks)

    def keep(self, partitions: Collection[int]) -> None:
        """Forget the messages of partitions no longer held (unacknowledged: their next
        holder replays them)."""
        for tp in [tp for tp in self.queues if tp.partition not in partitions]:
            del self.queues[tp]


def _stored(held: Held, marks: Marks) -> bool:
    if held.source is None:
        return True
    return held.offset <= marks.get(held.source, (0.0, -1))[1]
