"""``thumbline agreement``: an LLM judge's verdicts against the end users' labels."""

from __future__ import annotations

from typing import Annotated

import typer

from thumbline.cli.common import SQL, app, err, out, store_settings
from thumbline.cli.layout import Column, fitted
from thumbline.cli.read import _listing, when

_SUMMARY = (
    Column("project", cut_to=6), Column("model", cut_to=6), Column("capability", cut_to=6),
    Column("evaluator", cut_to=6), Column("traces", right=True), Column("agree", right=True),
    Column("judge good/user bad", right=True), Column("judge bad/user good", right=True),
    Column("last", drop=1),
)  # fmt: skip
_DISAGREEMENTS = (
    Column("time"), Column("trace"), Column("evaluator", cut_to=6), Column("judge"),
    Column("score", right=True), Column("user"), Column("model", cut_to=6, drop=2),
    Column("capability", cut_to=6, drop=1),
)  # fmt: skip


@app.command(rich_help_panel="Read what it stored", env=SQL)
def agreement(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    model: Annotated[str | None, typer.Option(help="Only answers of this model.")] = None,
    capability: Annotated[str | None, typer.Option(help="Only this capability.")] = None,
    evaluator: Annotated[
        str | None, typer.Option(help="Only this judge (the name of its feedback).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Traces rated this long ago or later, e.g. 24h, 7d")
    ] = None,
    disagreements: Annotated[
        bool,
        typer.Option(
            "--disagreements",
            help="List the traces where the judge and the user disagree, "
            "newest first, instead of the counts.",
        ),
    ] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many rows.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """How often an LLM judge agrees with the end users, per model and capability.

    Counts the traces that have both a judge's verdict (its good or bad label, else
    its score: 0.5 or more is good) and an end user's good or bad label, each the
    newest; then the share that agree and each direction of disagreement, the
    lowest agreement first.
    """
    from thumbline.agreement import AgreementFilter, agreement_sql, disagreements_sql
    from thumbline.queries import parse_since

    settings = store_settings()
    db = settings.clickhouse_database

    def build() -> str:
        filters = AgreementFilter(
            project=project, model=model, capability=capability, evaluator=evaluator,
            since=parse_since(since) if since else None, limit=limit,
        )  # fmt: skip
        return (disagreements_sql if disagreements else agreement_sql)(db, filters)

    rows = _listing(settings, build, as_json)
    if rows is None:
        return
    if disagreements:
        cells = [
            {"time": when(ts), "trace": trace_id, "evaluator": name, "judge": judge,
             "score": "" if score is None else f"{score:.2f}", "user": user, "model": mdl,
             "capability": cap}
            for ts, _, mdl, cap, name, trace_id, judge, score, user in rows
        ]  # fmt: skip
        out.print(fitted(_DISAGREEMENTS, cells, out.width)[0])
        err.print(f"{len(rows)} trace{'s' if len(rows) != 1 else ''} where they disagree",
                  style="dim")  # fmt: skip
        return
    cells = [
        {"project": proj, "model": mdl, "capability": cap, "evaluator": name,
         "traces": str(targets), "agree": f"{share:.0%}", "judge good/user bad": str(good_bad),
         "judge bad/user good": str(bad_good), "last": when(last)}
        for proj, mdl, cap, name, targets, _, share, good_bad, bad_good, last in rows
    ]  # fmt: skip
    out.print(fitted(_SUMMARY, cells, out.width)[0])
    if not rows:
        err.print(
            "no trace has both a judge's verdict and an end user's good or bad label: send "
            "the judge's feedback with a key made by `thumbline keys create --scope ingest "
            "--annotator evaluator`", style="dim", markup=False,
        )  # fmt: skip
        return
    err.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}; --disagreements lists the "
              "traces where they disagree", style="dim")  # fmt: skip
