"""routed_marks: how far key_by_trace's stages have routed each input partition into ``keyed``.

Any number of key_by_trace stages share one consumer group (one per worker); the
group splits the input partitions among them. Each second every stage sends to
every partition of ``keyed`` the input partitions it holds, each with how far it
is routed, and how many input partitions exist in all:

    {"routed_inputs": {"<topic>:<partition>": ms, ...}, "inputs": N}

The key is not the previous release's ``routed`` (``{"routed": ms}``, still read,
as covering every input): a join of that release passes over this marker, its
watermark waiting until it is upgraded, instead of dead-lettering it each second.

Claim: every message of that input partition older than ``ms`` is in ``keyed``
before this marker. A claim stays true forever (the stage sent the messages
before the marker), so the join keeps, per partition of ``keyed`` and per input
partition, the highest ``ms`` it has read, whichever stage made it; a stage that
lost a partition simply stops claiming it. The join's routed mark for a
partition of ``keyed`` is the lowest claim over all N input partitions, and
None while some input partition has no claim: a partition nobody reported
(held by a stage that just got it, or by one that hangs) holds the join back
rather than letting rate windows complete short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import TopicPartition

#: Input partitions a marker may name, and the join keeps per partition of ``keyed``, at
#: most (a writer on ``keyed`` must not grow the join's memory without bound).
MAX_INPUTS = 10_000
#: Characters of ``<topic>:<partition>``, at most (a topic name has at most 249).
MAX_NAME = 260
#: A claim later than this (ms) is not a time: about the year 2500.
MAX_MS = 17_000_000_000_000


def marker(claims: Mapping[TopicPartition | tuple[str, int], float], *, inputs: int) -> bytes:
    """A stage's marker: ``claims`` (seconds) by input partition; ``inputs``: how many exist."""
    return orjson.dumps(
        {
            "routed_inputs": {f"{tp[0]}:{tp[1]}": int(at * 1000) for tp, at in claims.items()},
            "inputs": inputs,
        }
    )


class RoutedMarks:
    """The join's view of the routed markers, per partition of ``keyed``."""

    def __init__(self) -> None:
        self._claims: dict[int, dict[str, float]] = {}  # keyed partition -> input -> seconds
        self._inputs: dict[int, int] = {}  # keyed partition -> input partitions in all
        self._every: dict[int, float] = {}  # keyed partition -> an old-form claim

    def add(self, partition: int, body: Mapping[str, Any]) -> None:
        """A marker read on ``partition`` of ``keyed``, as decoded from JSON.

        Raises:
            ValueError: ``body`` is not a marker (the join dead-letters it); nothing
                of it is taken.
        """
        if "routed_inputs" not in body:
            # The previous release's form, {"routed": ms}: one stage held every input
            # partition, so it covers them all. Still read during a rolling upgrade.
            seconds = _seconds(body.get("routed"))
            self._every[partition] = max(self._every.get(partition, 0.0), seconds)
            return
        routed = body["routed_inputs"]
        if not isinstance(routed, dict):
            raise ValueError("a routed marker's routed_inputs are an object")
        inputs = body.get("inputs")
        if not isinstance(inputs, int) or isinstance(inputs, bool) or not 0 < inputs <= MAX_INPUTS:
            raise ValueError(f"a routed marker needs 1 to {MAX_INPUTS} inputs, not {inputs!r}")
        if len(routed) > MAX_INPUTS:
            raise ValueError(f"a routed marker names at most {MAX_INPUTS} input partitions")
        claims = {}
        for name, ms in routed.items():
            if not isinstance(name, str) or len(name) > MAX_NAME:
                raise ValueError(f"not an input partition: {str(name)[:MAX_NAME]!r}")
            claims[name] = _seconds(ms)
        kept = self._claims.setdefault(partition, {})
        if len(kept) + sum(1 for name in claims if name not in kept) > MAX_INPUTS:
            raise ValueError(f"more than {MAX_INPUTS} input partitions claimed on {partition}")
        for name, seconds in claims.items():
            kept[name] = max(kept.get(name, 0.0), seconds)
        self._inputs[partition] = max(self._inputs.get(partition, 0), inputs)

    def of(self, partition: int) -> float | None:
        """Every input message older than this (seconds) is in ``keyed`` before the
        markers read on ``partition``; None: some input partition has no claim yet."""
        every = self._every.get(partition)
        kept = self._claims.get(partition)
        if not kept or len(kept) < self._inputs.get(partition, 0):
            return every  # an input partition nobody reported: only an old-form claim covers it
        lowest = min(kept.values())
        return lowest if every is None else max(every, lowest)

    def claims(self, partition: int) -> int:
        """How many input partitions are claimed on ``partition`` of ``keyed``."""
        return len(self._claims.get(partition, ()))

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions of ``keyed`` another join worker holds now."""
        for partition in partitions:
            self._claims.pop(partition, None)
            self._inputs.pop(partition, None)
            self._every.pop(partition, None)


def _seconds(ms: Any) -> float:
    # not 0 <= NaN: refused too
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= MAX_MS:
        raise ValueError(f"a routed marker's time is milliseconds since 1970, not {ms!r}")
    return float(ms) / 1000
