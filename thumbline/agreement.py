"""The SQL behind ``thumbline agreement`` and ``GET /v1/agreement``: an LLM judge against the users.

Both read the views of migration 0011: ``evaluator_agreement_pairs`` (one row
per project, trace and judge that has both the judge's verdict and an end
user's good or bad label) and the counts over it. The view
``evaluator_agreement`` holds the same counts for all time; here they take the
command's filters first (``--since`` on the later of the two pieces of feedback).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from thumbline.queries import literal

#: The summary's columns, in order.
SUMMARY_COLUMNS = (
    "project", "model", "capability", "evaluator", "targets", "agreed", "agreement",
    "judge_good_user_bad", "judge_bad_user_good", "last_at",
)  # fmt: skip
#: A disagreement's columns, in order.
DISAGREEMENT_COLUMNS = (
    "ts", "project", "model", "capability", "evaluator", "trace_id", "judge_label", "judge_score",
    "user_label",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AgreementFilter:
    """What the agreement covers; empty fields do not filter."""

    project: str | None = None
    model: str | None = None
    capability: str | None = None
    evaluator: str | None = None
    since: timedelta | None = None
    limit: int = 50

    def where(self, now: datetime | None = None) -> str:
        clauses = ["1"]
        for column in ("project", "model", "capability", "evaluator"):
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = {literal(value)}")
        if self.since is not None:
            moment = ((now or datetime.now(UTC)) - self.since).astimezone(UTC)
            clauses.append(
                f"ts >= toDateTime64({literal(moment.strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"
            )
        return " AND ".join(clauses)

    def checked_limit(self) -> int:
        if not 1 <= self.limit <= 10_000:
            raise ValueError("--limit must be between 1 and 10000")
        return self.limit


def agreement_sql(database: str, filters: AgreementFilter, now: datetime | None = None) -> str:
    """Per project, model, capability and judge: traces both rated, how many agree and
    their share, each direction of disagreement; the lowest agreement first."""
    return (
        "SELECT project, model, capability, evaluator, count() AS targets, "  # noqa: S608
        "countIf(agree) AS agreed, round(agreed / targets, 4) AS agreement, "
        "countIf(judge_label = 'good' AND user_label = 'bad') AS judge_good_user_bad, "
        "countIf(judge_label = 'bad' AND user_label = 'good') AS judge_bad_user_good, "
        f"max(ts) AS last_at FROM {database}.evaluator_agreement_pairs "
        f"WHERE {filters.where(now)} GROUP BY project, model, capability, evaluator "
        f"ORDER BY agreement, targets DESC, project, model, capability, evaluator "
        f"LIMIT {filters.checked_limit()}"
    )


def disagreements_sql(database: str, filters: AgreementFilter, now: datetime | None = None) -> str:
    """The traces where the judge and the user disagree, newest first."""
    return (
        f"SELECT {', '.join(DISAGREEMENT_COLUMNS)} "  # noqa: S608
        f"FROM {database}.evaluator_agreement_pairs WHERE NOT agree AND {filters.where(now)} "
        f"ORDER BY ts DESC, trace_id LIMIT {filters.checked_limit()}"
    )
