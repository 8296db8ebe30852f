"""What the rates job reads from ClickHouse: its state at start, and windows to recompute.

The ``feedback`` table is the truth the rates are built from: deduplicated by
identity (``FINAL``), retractions removed, every correction in. So a window
read back from it is exact, whatever was late, replayed or moved; the counts
here follow :func:`thumbline.stream_jobs.bad_feedback_rates.contribution` to the letter.

Both count the feedback of ``RateState.annotators`` only (end users by
default), as ``contribution`` does (the recompute filters on ``annotator``;
the restart reads it and ``contribution`` decides).
Both leave out *pending* rows (feedback the join still holds, stored so people
can see it): the rates count the joined and orphan rows of
``feedback.enriched``, and the join publishes a pending event's outcome later,
as a late row if its window has completed by then.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from thumbline.schemas import Alert
from thumbline.stream_jobs.bad_feedback_rates import Counts, Dims, RateState
from thumbline.stream_jobs.sink import StoreClient

logger = logging.getLogger(__name__)

#: Most seconds of windows one recompute reads (a backfill of a month is read a day at a time).
MAX_SPAN = 86400.0

#: One row per (window, dimensions), as contribution() counts them, for both dimension sets.
_WINDOW_COUNTS = """
SELECT start, project, environment,
       if(grouping(model) = 0, model, '*') AS by_model,
       if(grouping(capability) = 0, capability, '*') AS by_capability,
       countIf(source != 'implicit' AND label = 'good') AS good,
       countIf(source != 'implicit' AND label = 'bad') AS bad,
       countIf(source != 'implicit' AND label NOT IN ('good', 'bad')) AS neutral,
       countIf(source = 'implicit') AS implicit,
       countIf(comment != '') AS with_comment,
       toFloat64(coalesce(sumIf(score, score IS NOT NULL), 0)) AS score_sum,
       countIf(score IS NOT NULL) AS score_count
FROM (
    SELECT toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({window:UInt32}))) AS start,
           project, environment, model, capability, label, source, comment, score
    FROM {db}.feedback FINAL
    WHERE ts >= fromUnixTimestamp64Milli({since:Int64})
      AND ts < fromUnixTimestamp64Milli({until:Int64}) AND retracted = 0
      AND has({annotators:Array(String)}, annotator) AND join_status != 'pending'
)
GROUP BY GROUPING SETS ((start, project, environment, model),
                        (start, project, environment, capability))
"""


def recompute_span(due: Sequence[float]) -> list[float]:
    """The first of the ``due`` windows that one recompute covers (at most ``MAX_SPAN``)."""
    return [start for start in due if start < due[0] + MAX_SPAN] if due else []


def read_windows(
    rates: RateState, client: StoreClient, database: str, due: Iterable[float]
) -> dict[float, dict[Dims, Counts]]:
    """The counts of the ``due`` windows, and of their neighbours that the sliding windows
    over them sum, read from ``feedback FINAL`` in one query."""
    due = sorted(due)
    if not due:
        return {}
    reach = max(rates.sliding, default=rates.window)
    since, until = due[0] - reach + rates.window, due[-1] + reach
    rows = client.query(
        _WINDOW_COUNTS.replace("{db}", database),
        parameters={
            "window": int(rates.window),
            "since": int(since * 1000),
            "until": int(until * 1000),
            "annotators": list(rates.annotators),
        },
    ).result_rows
    found: dict[float, dict[Dims, Counts]] = defaultdict(dict)
    for start, project, environment, model, capability, *c in rows:
        dims = (project, environment, model, capability)
        found[float(start)][dims] = Counts(c[0], c[1], c[2], c[3], c[4], float(c[5]), c[6])
    return dict(found)


def restore_rates(
    rates: RateState, client: StoreClient, database: str, *, now: float,
    keep: Callable[[str], bool] | None = None,
) -> None:  # fmt: skip
    """Rebuild the windows of the last ``rates.history`` seconds at start.

    - the windows this job wrote to ``feedback_rates`` come back as counts
      (cheap, whatever the volume), complete, for sliding windows and
      baselines; those written in the last ``reconcile`` seconds are compared
      with the table again once the watermark is known (they may lack rows that
      came after they were written);
    - from the first window it did not write (windows complete in order), the
      rows of ``feedback`` come back event by event into open windows, so the
      join's replay of rows not stored yet counts once.

    ``keep``: the projects whose windows this worker holds (default: all).
    """
    window = rates.window
    since = (now - rates.history) // window * window
    recent = now - rates.reconcile - rates.lateness - window
    stored = client.query(
        # database is an identifier checked by Settings; values go in as parameters
        "SELECT toUnixTimestamp(window_start) AS start, project, environment, model, "  # noqa: S608
        "capability, good, bad, neutral, implicit, with_comment, score_sum, score_count "
        f"FROM {database}.feedback_rates FINAL WHERE window_seconds = {int(window)} "
        "AND window_start >= fromUnixTimestamp64Milli({since:Int64})",
        parameters={"since": int(since * 1000)},
    ).result_rows
    last = since - window
    for start, project, environment, model, capability, *c in stored:
        if keep is not None and not keep(project):
            continue
        counts = Counts(c[0], c[1], c[2], c[3], c[4], float(c[5]), c[6])
        dims = (project, environment, model, capability)
        rates.restore_counts(float(start), dims, counts, recent=float(start) >= recent)
        last = max(last, float(start))
    replay_from = last + window
    result = client.query(
        "SELECT event_id, trace_id, version, ts, label, source, annotator, comment, score, "  # noqa: S608
        "retracted, project, environment, model, capability "
        f"FROM {database}.feedback FINAL "
        "WHERE ts >= fromUnixTimestamp64Milli({replay_from:Int64}) AND join_status != 'pending'",
        parameters={"replay_from": int(replay_from * 1000)},
    )
    names = result.column_names
    rows = []
    for values in result.result_rows:
        row = dict(zip(names, values, strict=True))
        if keep is not None and not keep(row["project"]):
            continue
        if row["ts"].tzinfo is None:
            row["ts"] = row["ts"].replace(tzinfo=UTC)
        rows.append(row)
    rates.apply(rows)
    logger.info(
        "rates restored: %d stored windows, %d events since %s",
        len(stored), len(rows), datetime.fromtimestamp(replay_from, UTC).isoformat(),
    )  # fmt: skip


def unpublished_alerts(client: StoreClient, database: str) -> list[Alert]:
    """Alert state changes stored but not yet sent (a crash came between), oldest first."""
    result = client.query(
        f"SELECT * EXCEPT (published, inserted_at) FROM {database}.alerts FINAL "  # noqa: S608
        "WHERE published = 0 ORDER BY at"
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(result.column_names, values, strict=True))
        for name in ("window_start", "window_end", "at"):
            if isinstance(row[name], datetime) and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
        out.append(Alert.model_validate(row))
    return out


def alert_rows(alerts: Sequence[Alert], *, published: bool) -> list[bytes]:
    """``alerts`` as rows of the table: unpublished, or published (one version later)."""
    return [
        orjson.dumps(
            {
                **orjson.loads(a.to_json()),
                "published": int(published),
                "version": a.version + int(published),
            }
        )  # fmt: skip
        for a in alerts
    ]


def latest_alerts(client: StoreClient, database: str) -> list[dict[str, Any]]:
    """The newest state of each (rule, dimensions), as the detector restores it."""
    result = client.query(
        "SELECT rule, project, environment, model, capability, "  # noqa: S608
        "argMax(alert_id, at) AS alert_id, argMax(state, at) AS state, "
        "argMax(window_start, at) AS window_start, max(at) AS changed_at "
        f"FROM {database}.alerts FINAL "
        "GROUP BY rule, project, environment, model, capability"
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(result.column_names, values, strict=True))
        row["at"] = row.pop("changed_at")  # as an Alert names it
        for name in ("window_start", "at"):
            if isinstance(row[name], datetime) and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
        out.append(row)
    return out
