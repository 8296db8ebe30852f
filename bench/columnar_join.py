"""A columnar prototype of the join's hot path (issue 13's next lever), for bench/columnar.py.

Not shipped: it measures what the stream would gain. Per keyed message it does
one ``orjson.loads``, then works per field: each field of every event is pulled
into a column by one comprehension and checked by one more, event times are
parsed per column, the join looks every (project, trace_id) up at once against
a compact state (a tuple per trace, the project as a small integer), and the
output rows are columns that are extended, not built row by row.

The fast checks accept a subset of what the pydantic models accept: any event
they do not vouch for (a field out of its bounds, an unknown field, a kind they
do not derive, a time in another format, a span event) takes the careful path
of ``thumbline.stream_jobs.decode_input`` on its own, which validates it with the models
or makes it a dead letter. So a bad event is still found, per event, and a
valid but unusual one gives the model's own values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from thumbline.schemas import FeedbackEvent, TimeBounds, Topics, TraceEvent
from thumbline.schemas._base import (
    MAX_ATTRIBUTES_BYTES,
    MAX_COMMENT_LEN,
    MAX_CORRECTION_LEN,
    MAX_METADATA_BYTES,
    check_nested,
)
from thumbline.schemas.feedback import normal_label
from thumbline.stream_jobs.decode_input import Batch, DecodeInput, Origin
from thumbline.stream_jobs.enriched_rows import DEFAULT_PROJECT, TraceAttributes

#: A feedback event's own fields, after validation and derivation (a pending row's tuple).
FB = (
    "event_id", "trace_id", "span_id", "name", "kind", "value", "score", "label", "comment",
    "correction", "category", "tags", "source", "annotator", "user_id", "session_id",
    "conversation_id", "project", "environment", "capability", "step", "metadata", "ts",
    "received_at", "retracted",
)  # fmt: skip
#: The output row (EnrichedFeedback without schema_version), in the ``feedback`` table's order.
OUT = (
    "event_id", "trace_id", "span_id", "name", "kind", "value", "score", "label", "comment",
    "correction", "category", "tags", "source", "annotator", "user_id", "session_id",
    "conversation_id", "project", "environment", "model", "capability", "step", "trace_name",
    "trace_status",
    "latency_ms", "total_tokens", "cost_usd", "metadata", "ts", "received_at", "join_status",
    "retracted", "version",
)  # fmt: skip
#: A ``traces`` row (TraceEvent without schema_version, plus version).
TR = (
    "trace_id", "span_id", "parent_span_id", "name", "project", "environment", "model",
    "capability", "step", "user_id", "session_id", "conversation_id", "start_time", "end_time",
    "latency_ms", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "status", "error",
    "attributes", "received_at", "version",
)  # fmt: skip
_FB_FIELDS = frozenset(FeedbackEvent.model_fields)
_TR_FIELDS = frozenset(TraceEvent.model_fields)
_RANK = {"orphan": 1, "joined": 2, "corrected": 3}
_STATUSES = frozenset({"unset", "ok", "error"})
_SOURCES = frozenset({"explicit", "implicit"})
_ANNOTATORS = frozenset({"end_user", "reviewer", "evaluator", "code"})
_ENUMS = ("kind", "source", "annotator")  # the models' enums, stored as their text


def _id(s: Any) -> bool:  # Id: 1..256 characters, no whitespace
    return type(s) is str and 0 < len(s) <= 256 and s.isprintable() and " " not in s


def _name(s: Any, most: int = 128) -> bool:  # Name: 1..128, nothing to strip
    return type(s) is str and 0 < len(s) <= most and s.strip() is s


def _text(s: Any, most: int) -> bool:
    return type(s) is str and len(s) <= most and s.strip() is s


def _time_ok(s: Any) -> bool:
    """The shape the producers send (RFC 3339 in UTC, 0, 3 or 6 decimals); others go careful."""
    return (
        type(s) is str and len(s) in (20, 24, 27) and s[10] == "T" and s[-1] == "Z"
        and s[4] == "-" and s[7] == "-" and s[13] == ":" and s[16] == ":"
        and (len(s) == 20 or s[19] == ".")
    )  # fmt: skip


_fromiso = datetime.fromisoformat


def _times(column: list[Any], bad: set[int]) -> list[datetime | None]:
    """A column of times of the right shape, parsed; one that is no date (month 13, hour
    24) marks its event for the careful path."""
    try:
        return [_fromiso(s) if s is not None and i not in bad else None
                for i, s in enumerate(column)]  # fmt: skip
    except ValueError:
        out: list[datetime | None] = []
        for i, s in enumerate(column):
            try:
                out.append(_fromiso(s) if s is not None and i not in bad else None)
            except ValueError:
                bad.add(i)
                out.append(None)
        return out


class ColumnarJoin:
    """Decode, join and collect rows as columns; a prototype of what the join would do.

    ``feedback`` and ``traces`` hold the output columns (dicts of lists) and
    ``dead`` the dead letters, until :meth:`take`.
    """

    def __init__(
        self, topics: Topics, *, bounds: TimeBounds | None = None, grace: float = 600.0,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.topics = topics
        self.bounds = bounds or TimeBounds()
        self.grace = grace
        self.clock = clock
        self.careful = DecodeInput(topics, self.bounds, defaultdict(int))
        self._topic = {"feedback": topics.feedback.name, "traces": topics.traces.name}
        self.projects: dict[str, int] = {}  # project -> small integer (the state's keys)
        self.strings: dict[str, str] = {}  # dimension values, one object each
        self.state: dict[tuple[int, str], tuple[Any, ...]] = {}  # key -> trace view
        self.spans: dict[tuple[int, str], TraceAttributes] = {}  # traces of several events
        self.pending: dict[tuple[int, str], dict[str, tuple[tuple[Any, ...], float]]] = {}
        self.orphans: dict[tuple[int, str], dict[str, tuple[Any, ...]]] = {}
        self.feedback: dict[str, list[Any]] = {name: [] for name in (*OUT, "partition")}
        self.traces: dict[str, list[Any]] = {name: [] for name in TR}
        self.dead: list[Any] = []
        self.counts: dict[str, int] = defaultdict(int)

    # decode ----------------------------------------------------------------------

    def decode(self, message: Any) -> tuple[dict[str, list], dict[str, list], list[TraceEvent]]:
        """One keyed message: (feedback columns, trace columns, trace events the models
        validated), validated and stamped."""
        body = orjson.loads(message.value)
        fb_items, tr_items = body["feedback"], body["traces"]
        fb_runs, tr_runs = body["feedback_from"], body["traces_from"]
        if sum(r[5] for r in fb_runs) != len(fb_items) or sum(r[5] for r in tr_runs) != len(
            tr_items
        ):
            raise ValueError("runs do not describe the events")  # the current path's careful way
        self.dead.extend(body["dead"])
        here = message.partition
        fb = self._feedback(fb_items, fb_runs, here) if fb_items else {}
        tr, slow = self._traces(tr_items, tr_runs, here) if tr_items else ({}, [])
        return fb, tr, slow

    @staticmethod
    def _sent(runs: list[list[Any]]) -> list[int]:
        sent: list[int] = []
        for run in runs:
            sent.extend([run[2]] * run[5])
        return sent

    def _feedback(self, items: list[Any], runs: list[list[Any]], here: int) -> dict[str, list]:
        n = len(items)
        bad = {i for i, d in enumerate(items) if type(d) is not dict or not d.keys() <= _FB_FIELDS}
        if bad:
            items = [d if i not in bad else {} for i, d in enumerate(items)]
        g = {f: [d.get(f) for d in items] for f in _FB_FIELDS}
        b = bad.add
        for i, v in enumerate(g["schema_version"]):
            if v is not None and not (type(v) is int and v == 1):
                b(i)
        for f in ("event_id", "trace_id"):
            for i, v in enumerate(g[f]):
                if not _id(v):
                    b(i)
        for f in ("span_id", "user_id", "session_id", "conversation_id"):
            for i, v in enumerate(g[f]):
                if v is not None and not _id(v):
                    b(i)
        for f in ("name", "category", "environment", "capability", "step"):
            for i, v in enumerate(g[f]):
                if v is not None and not _name(v):
                    b(i)
        for i, v in enumerate(g["project"]):
            if v is not None and not _name(v):
                b(i)
        for i, v in enumerate(g["label"]):
            if v is not None and not _name(v, 64):
                b(i)
        for f, most in (("comment", MAX_COMMENT_LEN), ("correction", MAX_CORRECTION_LEN)):
            for i, v in enumerate(g[f]):
                if v is not None and not _text(v, most):
                    b(i)
        for i, v in enumerate(g["tags"]):
            if v is not None and not (
                type(v) is list and len(v) <= 32 and all(_name(t) for t in v)
            ):
                b(i)
        for i, v in enumerate(g["source"]):
            if v is not None and v not in _SOURCES:
                b(i)
        for i, v in enumerate(g["annotator"]):
            if v is not None and v not in _ANNOTATORS:
                b(i)
        for i, v in enumerate(g["retracted"]):
            if v is not None and type(v) is not bool:
                b(i)
        for i, v in enumerate(g["range"]):
            if v is not None:
                b(i)  # a custom range: the model derives it
        for i, v in enumerate(g["score"]):
            if v is not None and not (type(v) is float and 0.0 <= v <= 1.0):
                b(i)
        for i, v in enumerate(g["metadata"]):
            if v is not None and (type(v) is not dict or not _nested(v, MAX_METADATA_BYTES)):
                b(i)
        for i, v in enumerate(g["ts"]):
            if not _time_ok(v):
                b(i)  # absent (the model stamps now) or another format
        for i, v in enumerate(g["received_at"]):
            if v is not None and not _time_ok(v):
                b(i)
        value = g["value"]
        for i, v in enumerate(value):
            t = type(v)
            if t is int:
                value[i] = float(v)  # as pydantic's float | str union makes it
            elif t is float:
                if not math.isfinite(v):
                    b(i)
            elif t is str:
                if len(v) > MAX_CORRECTION_LEN or v.strip() is not v:
                    b(i)
            elif v is not None and t is not bool:
                b(i)
        kind, name, label, score, source = [], [], [], [], []
        comment, category, correction = g["comment"], g["category"], g["correction"]
        for i, (k, v, lab, sc, nm, src, cat) in enumerate(
            zip(g["kind"], value, g["label"], g["score"], g["name"], g["source"], g["category"],
                strict=True)
        ):  # fmt: skip
            try:
                k, v, dl, ds = _derive(k, v, cat)
            except ValueError:
                b(i)  # the model says why (or it is a kind only the model derives)
                k = dl = ds = None
            value[i] = v
            lab = normal_label(lab)
            kind.append(k)
            name.append(nm if nm is not None else k)
            label.append(lab if lab is not None else dl)
            score.append(sc if sc is not None else (round(ds, 9) if ds is not None else None))
            source.append(src if src is not None else ("implicit" if k == "signal" else "explicit"))
        ts = _times(g["ts"], bad)
        sent = self._sent(runs)
        received = self._received(g["received_at"], sent, bad)
        self._bound(("ts",), (ts,), received, sent, bad)
        project = [p if p is not None else DEFAULT_PROJECT for p in g["project"]]
        cols = {
            "event_id": g["event_id"], "trace_id": g["trace_id"], "span_id": g["span_id"],
            "name": name, "kind": kind, "value": value, "score": score, "label": label,
            "comment": comment, "correction": correction, "category": category,
            "tags": [tuple(t) if t else () for t in g["tags"]], "source": source,
            "annotator": [a if a is not None else "end_user" for a in g["annotator"]],
            "user_id": g["user_id"], "session_id": g["session_id"],
            "conversation_id": g["conversation_id"], "project": project,
            "environment": g["environment"], "capability": g["capability"], "step": g["step"],
            "metadata": [m if m is not None else {} for m in g["metadata"]], "ts": ts,
            "received_at": received,
            "retracted": [r if r is not None else False for r in g["retracted"]],
        }  # fmt: skip
        if bad:
            cols = self._careful_feedback(cols, items, runs, here, bad, n)
        return cols

    def _received(self, given: list[Any], sent: list[int], bad: set[int]) -> list[Any]:
        stamp: dict[int, datetime] = {}
        out: list[datetime | None] = []
        for i, (r, ms) in enumerate(zip(given, sent, strict=True)):
            if i in bad:
                out.append(None)
            elif r is not None:
                try:
                    out.append(_fromiso(r))
                except ValueError:
                    bad.add(i)
                    out.append(None)
            else:
                when = stamp.get(ms)
                if when is None:
                    when = stamp[ms] = datetime.fromtimestamp(ms / 1000, UTC)
                out.append(when)
        return out

    def _bound(
        self, names: tuple[str, ...], columns: tuple[list[Any], ...], received: list[Any],
        sent: list[int], bad: set[int],
    ) -> None:  # fmt: skip
        """TimeBounds.check on columns: received_at by the input message's time, the event
        times by received_at; an event out of bounds goes careful (ts_out_of_range there)."""
        future, age = self.bounds.max_future, self.bounds.max_age
        for i, (r, ms) in enumerate(zip(received, sent, strict=True)):
            if r is None:
                continue
            if ms:
                ahead = r.timestamp() - ms / 1000
                if ahead > future or -ahead > age:
                    bad.add(i)
                    continue
            for column in columns:
                v = column[i]
                if v is not None:
                    ahead = (v - r).total_seconds()
                    if ahead > future or -ahead > age:
                        bad.add(i)

    def _careful_feedback(
        self, cols: dict[str, list], items: list[Any], runs: list[list[Any]], here: int,
        bad: set[int], n: int,
    ) -> dict[str, list]:  # fmt: skip
        keep = [i for i in range(n) if i not in bad]
        out = {f: [cols[f][i] for i in keep] for f in FB}
        for event in self._careful("feedback", items, runs, here, bad):
            row = event.__dict__
            for f in FB:
                v = row[f]
                out[f].append(str(v) if f in _ENUMS and v is not None else v)
        return out

    def _careful(
        self, kind: str, items: list[Any], runs: list[list[Any]], here: int, bad: set[int]
    ) -> list[Any]:
        """The events the fast checks did not vouch for, one by one as the join does today."""
        batch, at = Batch(), 0
        self.counts["careful"] += len(bad)
        for partition, offset, ms, key, index, count in runs:
            origin = Origin(self._topic[kind], partition, offset, ms / 1000,
                            key.encode() if isinstance(key, str) else None)  # fmt: skip
            for j in range(at, at + count):
                if j in bad:
                    self.careful._careful(origin, here, None, batch, kind, [items[j]],
                                          index + j - at)  # fmt: skip
            at += count
        self.dead.extend(batch.dead)
        if batch.forward:
            raise NotImplementedError("an event on another partition than its trace's")
        if kind == "traces":
            return batch.traces
        return [e for events, _ in batch.feedback for e in events]

    def _traces(
        self, items: list[Any], runs: list[list[Any]], here: int
    ) -> tuple[dict[str, list], list[TraceEvent]]:
        n = len(items)
        bad = {i for i, d in enumerate(items) if type(d) is not dict or not d.keys() <= _TR_FIELDS}
        if bad:
            items = [d if i not in bad else {} for i, d in enumerate(items)]
        g = {f: [d.get(f) for d in items] for f in _TR_FIELDS}
        b = bad.add
        for i, v in enumerate(g["schema_version"]):
            if v is not None and not (type(v) is int and v == 1):
                b(i)
        for i, v in enumerate(g["trace_id"]):
            if not _id(v):
                b(i)
        for f in ("span_id", "parent_span_id"):
            for i, v in enumerate(g[f]):
                if v is not None:
                    b(i)  # span events merge in the model's way (TraceAttributes.merge)
        for f in ("user_id", "session_id", "conversation_id"):
            for i, v in enumerate(g[f]):
                if v is not None and not _id(v):
                    b(i)
        for f in ("name", "project", "environment", "model", "capability", "step"):
            for i, v in enumerate(g[f]):
                if v is not None and not _name(v):
                    b(i)
        for f in ("latency_ms", "cost_usd"):
            for i, v in enumerate(g[f]):
                if v is not None and not (type(v) is float and 0.0 <= v < math.inf):
                    b(i)
        for f in ("input_tokens", "output_tokens", "total_tokens"):
            for i, v in enumerate(g[f]):
                if v is not None and not (type(v) is int and v >= 0):
                    b(i)
        for i, v in enumerate(g["status"]):
            if v is not None and v not in _STATUSES:
                b(i)
        for i, v in enumerate(g["error"]):
            if v is not None and not _text(v, MAX_COMMENT_LEN):
                b(i)
        for i, v in enumerate(g["attributes"]):
            if v is not None and (type(v) is not dict or not _nested(v, MAX_ATTRIBUTES_BYTES)):
                b(i)
        for f in ("start_time", "end_time", "received_at"):
            for i, v in enumerate(g[f]):
                if v is not None and not _time_ok(v):
                    b(i)
        start, end = _times(g["start_time"], bad), _times(g["end_time"], bad)
        latency, total, status = g["latency_ms"], g["total_tokens"], g["status"]
        for i, (s, e, tin, tout, err) in enumerate(
            zip(start, end, g["input_tokens"], g["output_tokens"], g["error"], strict=True)
        ):
            if s and e:
                if e < s:
                    b(i)
                elif latency[i] is None:
                    latency[i] = (e - s).total_seconds() * 1000.0
            if total[i] is None and (tin or tout):
                total[i] = (tin or 0) + (tout or 0)
            st = status[i] or "unset"
            status[i] = "error" if err and st == "unset" else st
        sent = self._sent(runs)
        received = self._received(g["received_at"], sent, bad)
        self._bound(("start_time", "end_time"), (start, end), received, sent, bad)
        cols = {
            "trace_id": g["trace_id"], "span_id": g["span_id"],
            "parent_span_id": g["parent_span_id"], "name": g["name"],
            "project": [p if p is not None else DEFAULT_PROJECT for p in g["project"]],
            "environment": [e if e is not None else "default" for e in g["environment"]],
            "model": g["model"], "capability": g["capability"], "step": g["step"],
            "user_id": g["user_id"], "session_id": g["session_id"],
            "conversation_id": g["conversation_id"], "start_time": start, "end_time": end,
            "latency_ms": latency, "input_tokens": g["input_tokens"],
            "output_tokens": g["output_tokens"], "total_tokens": total,
            "cost_usd": g["cost_usd"], "status": status, "error": g["error"],
            "attributes": [a if a is not None else {} for a in g["attributes"]],
            "received_at": received,
        }  # fmt: skip
        slow: list[TraceEvent] = []
        if bad:
            keep = [i for i in range(n) if i not in bad]
            cols = {f: [v[i] for i in keep] for f, v in cols.items()}
            slow = self._careful("traces", items, runs, here, bad)
        return cols, slow

    # join ------------------------------------------------------------------------

    def _pid(self, project: str) -> int:
        pid = self.projects.get(project)
        if pid is None:
            pid = self.projects[project] = len(self.projects)
        return pid

    def _s(self, value: str | None) -> str:
        if not value:
            return ""
        held = self.strings.get(value)
        if held is None:
            held = self.strings[value] = value
        return held

    def join(self, batches: list[tuple[int, dict, dict, list[TraceEvent]]]) -> None:
        """One micro-batch of decoded messages: traces first, then feedback (as the job)."""
        now = self.clock()
        touched: dict[tuple[int, str], None] = {}
        for _partition, _fb, tr, slow in batches:
            if tr:
                self._add_traces(tr, touched, now)
            for event in slow:
                self._merge_slow(event, touched, now)
        for key in touched:
            waiting = self.pending.pop(key, None)
            if waiting:
                self._emit_tuples([row for row, _ in waiting.values()], "joined")
            orphans = self.orphans.pop(key, None)
            if orphans:
                self._emit_tuples(list(orphans.values()), "corrected")
        for partition, fb, _tr, _slow in batches:
            if fb:
                self._add_feedback(partition, fb, now)

    def _add_traces(self, tr: dict[str, list], touched: dict, now: float) -> None:
        pid, s, state = self._pid, self._s, self.state
        for row in zip(
            tr["project"], tr["trace_id"], tr["environment"], tr["model"], tr["capability"],
            tr["step"], tr["user_id"], tr["session_id"], tr["conversation_id"], tr["name"],
            tr["status"], tr["latency_ms"], tr["cost_usd"], tr["total_tokens"], strict=True,
        ):  # fmt: skip
            key = (pid(row[0]), row[1])
            touched[key] = None
            if key in state:
                raise NotImplementedError("a second event of a trace (merge as TraceAttributes)")
            state[key] = (
                s(row[2]), s(row[3]), s(row[4]), s(row[5]), row[6] or "", row[7] or "",
                row[8] or "", s(row[9]), s(row[10]), row[11], row[12], row[13],
            )  # fmt: skip
        for f in TR[:-1]:
            self.traces[f].extend(tr[f])
        self.traces["version"].extend(int(r.timestamp() * 1_000_000) for r in tr["received_at"])

    def _merge_slow(self, event: TraceEvent, touched: dict, now: float) -> None:
        """A trace event the fast checks left to the model: merged as the state does today."""
        key = (self._pid(event.project), event.trace_id)
        if key in self.state and key not in self.spans:
            raise NotImplementedError("a span event of a trace first seen whole")
        attrs = self.spans.setdefault(key, TraceAttributes(event.trace_id, project=event.project))
        attrs.merge(event, now)
        self.state[key] = (
            attrs.environment, attrs.model, attrs.capability, attrs.step, attrs.user_id,
            attrs.session_id, attrs.conversation_id, attrs.name, attrs.status, attrs.latency_ms,
            attrs.cost, attrs.tokens,
        )  # fmt: skip
        touched[key] = None
        fields = dict(event.__dict__)
        for f in TR[:-1]:
            v = fields.get(f)
            self.traces[f].append(str(v) if f == "status" else v)
        self.traces["version"].append(int(event.received_at.timestamp() * 1_000_000))  # type: ignore[union-attr]

    def _add_feedback(self, partition: int, fb: dict[str, list], now: float) -> None:
        pid, state = self._pid, self.state
        keys = [(pid(p), t) for p, t in zip(fb["project"], fb["trace_id"], strict=True)]
        attrs = [state.get(k) for k in keys]
        if None in attrs:  # some wait for their trace: hold them as tuples (5-7% here)
            rows = list(zip(*(fb[f] for f in FB), strict=True))
            held = [i for i, a in enumerate(attrs) if a is None]
            for i in held:
                self._hold(keys[i], rows[i], now)
            keep = [i for i, a in enumerate(attrs) if a is not None]
            fb = {f: [fb[f][i] for i in keep] for f in FB}
            attrs = [attrs[i] for i in keep]
        self._emit(fb, attrs, "joined", partition)

    def _hold(self, key: tuple[int, str], row: tuple[Any, ...], now: float) -> None:
        waiting = self.pending.setdefault(key, {})
        previous = waiting.get(row[0])
        if previous is None or _version(row, 2) >= _version(previous[0], 2):
            waiting[row[0]] = (row, now + self.grace)

    def expire(self) -> None:
        """Emit as orphans the feedback whose grace ended (every trace lookup finds none)."""
        now = self.clock()
        for key in list(self.pending):
            waiting = self.pending[key]
            due = [row for row, deadline in waiting.values() if deadline <= now]
            if not due:
                continue
            for row in due:
                del waiting[row[0]]
                self.orphans.setdefault(key, {})[row[0]] = row
            if not waiting:
                del self.pending[key]
            self._emit_tuples(due, "orphan")

    def _emit_tuples(self, rows: list[tuple[Any, ...]], status: str) -> None:
        fb = {f: list(column) for f, column in zip(FB, zip(*rows, strict=True), strict=True)}
        state, pid = self.state, self._pid
        attrs: list[Any] = (
            [None] * len(rows)
            if status == "orphan"
            else [state[(pid(p), t)] for p, t in zip(fb["project"], fb["trace_id"], strict=True)]
        )
        partitions = self.topics.keyed.partitions
        from thumbline.schemas import (
            partition_for,  # the released rows' partition: once per row, rare
        )

        for p in {partition_for(t, partitions) for t in fb["trace_id"]}:
            pick = [i for i, t in enumerate(fb["trace_id"]) if partition_for(t, partitions) == p]
            self._emit({f: [fb[f][i] for i in pick] for f in FB}, [attrs[i] for i in pick], status,
                       p)  # fmt: skip

    def _emit(self, fb: dict[str, list], attrs: list[Any], status: str, partition: int) -> None:
        """Extend the output columns: the feedback's own values win, the trace fills the rest."""
        out = self.feedback
        n = len(attrs)
        if not n:
            return
        for f in ("event_id", "trace_id", "span_id", "name", "kind", "value", "score", "label",
                  "comment", "correction", "category", "tags", "source", "annotator", "project",
                  "metadata", "ts", "received_at", "retracted"):  # fmt: skip
            out[f].extend(fb[f])
        if status == "orphan":
            out["user_id"].extend([v or None for v in fb["user_id"]])
            out["session_id"].extend([v or None for v in fb["session_id"]])
            out["conversation_id"].extend([v or None for v in fb["conversation_id"]])
            out["environment"].extend([v or "" for v in fb["environment"]])
            out["model"].extend([""] * n)
            out["capability"].extend([v or None for v in fb["capability"]])
            out["step"].extend([v or None for v in fb["step"]])
            for f in ("trace_name", "trace_status", "latency_ms", "total_tokens", "cost_usd"):
                out[f].extend([None] * n)
        else:
            z = zip
            out["environment"].extend([v or a[0] for v, a in z(fb["environment"], attrs)])
            out["model"].extend([a[1] for a in attrs])
            out["capability"].extend([v or a[2] or None for v, a in z(fb["capability"], attrs)])
            out["step"].extend([v or a[3] or None for v, a in z(fb["step"], attrs)])
            out["user_id"].extend([v or a[4] or None for v, a in z(fb["user_id"], attrs)])
            out["session_id"].extend([v or a[5] or None for v, a in z(fb["session_id"], attrs)])
            out["conversation_id"].extend(
                [v or a[6] or None for v, a in z(fb["conversation_id"], attrs)]
            )
            out["trace_name"].extend([a[7] or None for a in attrs])
            out["trace_status"].extend([a[8] or None for a in attrs])
            out["latency_ms"].extend([a[9] for a in attrs])
            out["cost_usd"].extend([a[10] for a in attrs])
            out["total_tokens"].extend([a[11] for a in attrs])
        rank = _RANK[status]
        out["join_status"].extend([status] * n)
        out["version"].extend(
            [int(r.timestamp() * 1_000_000) * 4 + rank for r in fb["received_at"]]
        )
        out["partition"].extend([partition] * n)
        self.counts[status] += n


def _version(row: tuple[Any, ...], rank: int) -> int:
    return int(row[22].timestamp() * 1_000_000) * 4 + rank


def _nested(value: dict[str, Any], most: int) -> bool:
    if not value:
        return True
    try:
        check_nested(value, "x", most)
    except ValueError:
        return False
    return True


def _derive(kind: Any, value: Any, category: Any) -> tuple[str, Any, str | None, float | None]:
    """(kind, value, derived label, derived score) for the kinds derived here; ValueError
    for a value that does not fit its kind, or a kind left to the model."""
    if kind == "thumb":
        if isinstance(value, str) and value.lower() in ("up", "down"):
            value = value.lower()
        elif value is True or value == 1:
            value = "up"
        elif value is False or value == -1:
            value = "down"
        else:
            raise ValueError
        return (kind, value, "good", 1.0) if value == "up" else (kind, value, "bad", 0.0)
    if kind == "rating" or kind == "score":
        if type(value) is not float:
            raise ValueError
        if kind == "rating":
            if not 1.0 <= value <= 5.0:
                raise ValueError
            score: float | None = (value - 1.0) / 4.0
        else:
            score = float(value) if 0.0 <= value <= 1.0 else None
        if score is None:
            return kind, value, "neutral", None
        label = "bad" if score <= 0.25 else "good" if score >= 0.75 else "neutral"
        return kind, value, label, score
    if kind == "bool":
        if type(value) is not bool:
            raise ValueError
        return (kind, value, "good", 1.0) if value else (kind, value, "bad", 0.0)
    if kind == "signal":
        if value is not None:
            raise ValueError
        return kind, value, "neutral", None
    raise ValueError  # text, category, correction, label, aliases, no kind: the model's
