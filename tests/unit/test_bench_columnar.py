"""bench/columnar.py's prototype makes the join's rows and dead letters, bad input included."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from columnar import input_records, keyed_batches, run_current, run_prototype, same_rows  # noqa: E402

from thumbline.schemas import Topics  # noqa: E402


class _NoStore:
    """The sink's client: the test compares rows, it inserts nothing."""

    def raw_insert(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("not called")

    def query(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("not called")

    def close(self) -> None:
        pass


def _edit(records: list, kind: str, nth: int, change: dict) -> None:
    """Change the ``nth`` event of ``kind`` (a topic suffix) in place."""
    found = [r for r in records if r.topic.endswith(kind)][nth]
    event = orjson.loads(found.value)
    event.update(change)
    found.value = orjson.dumps({k: v for k, v in event.items() if v is not ...})


def test_prototype_rows_and_dead_letters_equal_the_join() -> None:
    topics = Topics.build("t.", 8)
    records = input_records(400, topics)
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    # invalid: each must become the same dead letter on both paths
    _edit(records, "feedback", 3, {"trace_id": "has space"})
    _edit(records, "feedback", 5, {"kind": "rating", "value": 7.0, "label": ..., "score": ...})
    _edit(records, "feedback", 7, {"ts": old, "received_at": ...})
    _edit(records, "feedback", 9, {"colour": "blue"})
    _edit(records, "traces", 4, {"latency_ms": -1.0})
    _edit(records, "feedback", 21, {"ts": "2026-13-01T10:00:00Z"})  # the right shape, no date
    _edit(records, "feedback", 25, {"annotator": "robot"})
    # valid, but for the models to judge: each must give the model's row
    _edit(records, "feedback", 11, {"kind": "text", "value": "nice", "label": ..., "score": ...})
    _edit(records, "feedback", 13, {"kind": "stars", "value": 4, "label": ..., "score": ...})
    # valid, and for the fast checks: an integer value, a time stamped from the message's
    _edit(records, "feedback", 15, {"received_at": ...})
    _edit(records, "feedback", 17, {"kind": "thumb", "value": 1, "label": ..., "score": ...})
    _edit(records, "feedback", 19, {"kind": "rating", "value": 2, "label": ..., "score": ...})
    _edit(records, "feedback", 23, {"annotator": "evaluator"})
    _edit(records, "traces", 6, {"model": "  model-9  ", "latency_ms": ...})
    records[20].value = b"{not json"  # key_by_trace's own dead letter
    batches = keyed_batches(records, 150, topics)

    current = run_current(batches, topics, _NoStore(), "db")
    proto = run_prototype(batches, topics)

    same_rows(current, proto)  # raises on any difference, dead letters included
    assert sum(r.annotator == "evaluator" for r in current["rows"]) == 1
    assert sorted(d.reason if hasattr(d, "reason") else d["reason"] for d in current["dead"]) == [
        "bad_json",
        *["invalid_event"] * 6,
        "ts_out_of_range",
    ]
    assert proto["join"].counts["careful"] == 10  # the others took the columnar path
