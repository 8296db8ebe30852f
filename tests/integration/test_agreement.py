"""The evaluator agreement view on real chDB: an LLM judge against the end users, counted two ways.

The feedback is the load generator's mix (``LoadSpec.evaluator_share``: a judge
rates a share of the traces, half of them bad whatever the user said), with a
few changes of mind, a second judge, retractions, a judge's score between the
thresholds and feedback about a whole conversation (no trace); the rows carry
their trace's model and capability, as the join writes them. The view's numbers
must equal a count done here in Python.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import unique
from thumbline.agreement import AgreementFilter, agreement_sql, disagreements_sql
from thumbline.producers.loadgen import LoadGenerator, LoadSpec
from thumbline.schemas import FeedbackEvent
from thumbline.store import apply_migrations

COLUMNS = [
    "event_id", "trace_id", "project", "environment", "model", "capability", "label", "score",
    "annotator", "source", "kind", "name", "ts", "received_at", "version", "retracted",
    "join_status",
]  # fmt: skip
T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)


def mix(n: int = 600) -> list[dict[str, Any]]:
    """The generator's users and judge, plus the cases a judge and a user make in real life."""
    gen = LoadGenerator(LoadSpec(evaluator_share=0.5, seed=16, run_id="agree", projects=2,
                                 models=3, capabilities=2))  # fmt: skip
    rng = random.Random(16)  # noqa: S311 (test data)
    rows: list[dict[str, Any]] = []

    def add(event: FeedbackEvent, trace: Any, at: datetime, **extra: Any) -> None:
        rows.append({
            "event_id": event.event_id, "trace_id": event.trace_id, "project": event.project,
            "environment": trace.environment, "model": trace.model,
            "capability": trace.capability, "label": event.label, "score": event.score,
            "annotator": event.annotator.value, "source": event.source.value,  # type: ignore[union-attr]
            "kind": event.kind.value, "name": event.name, "ts": at, "received_at": at,  # type: ignore[union-attr]
            "version": 1, "retracted": 0, "join_status": "joined", **extra,
        })  # fmt: skip

    for i in range(n):
        trace, feedback, _ = gen.pair(0.0)
        at = T0 + timedelta(seconds=i)
        add(feedback, trace, at)
        judged = gen.verdict(trace)
        if judged is not None:
            add(judged, trace, at + timedelta(seconds=rng.choice([-1, 1])))
        if rng.random() < 0.1:  # the user changes their mind later: the newest label counts
            again = feedback.model_copy(update={"event_id": f"{feedback.event_id}-2",
                                                "label": rng.choice(["good", "bad"])})  # fmt: skip
            add(again, trace, at + timedelta(seconds=5))
        if rng.random() < 0.1:  # a second judge, with a label only
            other = FeedbackEvent.parse({"trace_id": trace.trace_id, "project": trace.project,
                                         "event_id": f"{trace.trace_id}-safety", "name": "safety",
                                         "label": rng.choice(["good", "bad"]),
                                         "annotator": "evaluator"})  # fmt: skip
            add(other, trace, at)
        if rng.random() < 0.05:  # a judge's score between the thresholds: 0.5 and up is good
            middle = FeedbackEvent.parse({"trace_id": trace.trace_id, "project": trace.project,
                                          "event_id": f"{trace.trace_id}-mid", "name": "middle",
                                          "kind": "score", "value": rng.choice([0.4, 0.5, 0.6]),
                                          "annotator": "evaluator"})  # fmt: skip
            add(middle, trace, at)
        if rng.random() < 0.03:  # a retracted user row counts nowhere
            rows[-1 if rows[-1]["annotator"] == "end_user" else 0]["retracted"] = 1
    # feedback about a whole conversation (no trace): a user's and a judge's, never a pair
    for n, (who, label) in enumerate((("end_user", "bad"), ("evaluator", "good"))):
        rows.append({**rows[0], "event_id": f"conversation-{n}", "trace_id": "",
                     "annotator": who, "label": label, "name": "llm-judge", "source": "explicit",
                     "retracted": 0})  # fmt: skip
    return rows


def counted_in_python(rows: list[dict[str, Any]], since: datetime | None = None) -> dict:
    live = [r for r in rows if not r["retracted"] and r["trace_id"]]
    newest = lambda rs: max(rs, key=lambda r: (r["ts"], r["event_id"]))  # noqa: E731
    users: dict[tuple, list] = defaultdict(list)
    judges: dict[tuple, list] = defaultdict(list)
    for r in live:
        if (
            r["annotator"] == "end_user"
            and r["source"] == "explicit"
            and r["label"] in ("good", "bad")
        ):
            users[r["project"], r["trace_id"]].append(r)
        elif r["annotator"] == "evaluator":
            judges[r["project"], r["trace_id"], r["name"]].append(r)
    out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (project, trace_id, name), said in judges.items():
        if (project, trace_id) not in users:
            continue
        judge, user = newest(said), newest(users[project, trace_id])
        if since is not None and max(judge["ts"], user["ts"]) < since:
            continue
        verdict = (
            judge["label"]
            if judge["label"] in ("good", "bad")
            else (None if judge["score"] is None else "good" if judge["score"] >= 0.5 else "bad")
        )
        if verdict is None:
            continue
        c = out[project, judge["model"], judge["capability"], name]
        c[0] += 1
        c[1] += verdict == user["label"]
        c[2] += verdict == "good" and user["label"] == "bad"
        c[3] += verdict == "bad" and user["label"] == "good"
    return {k: tuple(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def agreed(store) -> Any:
    db = unique("agreement")
    apply_migrations(store, db)
    rows = mix()
    store.insert(f"{db}.feedback", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
    yield db, rows
    store.command(f"DROP DATABASE IF EXISTS {db}")


def test_the_agreement_view_counts_what_python_counts_over_the_same_events(store, agreed):
    db, rows = agreed
    expected = counted_in_python(rows)
    assert len(expected) > 10 and sum(v[0] for v in expected.values()) > 200  # a real mix
    assert any(v[2] for v in expected.values()) and any(v[3] for v in expected.values())
    got = {
        (p, m, c, e): (targets, agreed, good_bad, bad_good)
        for p, m, c, e, targets, agreed, share, good_bad, bad_good, _ in store.query(
            f"SELECT * FROM {db}.evaluator_agreement"
        ).result_rows
    }
    assert got == expected


def test_the_commands_query_filters_and_agrees_with_the_view(store, agreed):
    db, rows = agreed
    since = T0 + timedelta(seconds=300)
    expected = counted_in_python(rows, since=since)
    now = T0 + timedelta(seconds=1000)
    result = store.query(agreement_sql(db, AgreementFilter(since=now - since, limit=10_000), now))
    got = {tuple(r[:4]): (r[4], r[5], r[7], r[8]) for r in result.result_rows}
    assert got == expected
    shares = [r[6] for r in result.result_rows]
    assert shares == sorted(shares)  # the lowest agreement first

    (project, model, _, _), _ = next(iter(expected.items()))
    one = store.query(agreement_sql(db, AgreementFilter(project=project, model=model)))
    assert {(r[0], r[1]) for r in one.result_rows} == {(project, model)}


def test_the_disagreements_are_the_traces_where_they_differ_newest_first(store, agreed):
    db, rows = agreed
    expected = counted_in_python(rows)
    listed = store.query(disagreements_sql(db, AgreementFilter(limit=10_000))).result_rows
    assert len(listed) == sum(v[2] + v[3] for v in expected.values())
    assert all(r[6] != r[8] for r in listed)  # judge_label, user_label
    times = [r[0] for r in listed]
    assert times == sorted(times, reverse=True)
