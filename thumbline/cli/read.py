"""Reading the store: ``sql``, ``inbox``, ``rates``, ``alerts`` and ``trace``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from thumbline.cli.common import app, cli_settings, err, fail, out
from thumbline.errors import SqlRefused, StoreError
from thumbline.settings import Settings

_FORMATS = {"table": "JSONCompact", "json": "JSONEachRow", "csv": "CSVWithNames"}
_READONLY = 164  # ClickHouse: "Cannot execute query in readonly mode"


@app.command(rich_help_panel="Read what it stored")
def sql(
    query: Annotated[str, typer.Argument(help="The SQL to run, e.g. SELECT count() FROM ...")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, json (one object a line) or csv")
    ] = "table",
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Also allow INSERT INTO thumbline.<table> [(columns)] SELECT ... (inserts into "
            "thumbline tables only: no DDL, no other writes).",
        ),
    ] = False,
) -> None:
    """Run SQL on the store, while `thumbline up` runs or not.

    SQL runs in a sandbox: one SELECT, EXPLAIN or DESCRIBE over the thumbline
    database, without table functions, files or settings, within the limits
    of THUMBLINE_SQL_MAX_*.
    """
    from thumbline.sqlclient import run_sql

    if fmt not in _FORMATS:
        fail(f"--format must be one of {', '.join(_FORMATS)}", 2)
    settings = cli_settings()
    try:
        body = run_sql(settings, query, fmt=_FORMATS[fmt], write=write)
    except StoreError as exc:
        if exc.code == _READONLY and not write and not isinstance(exc, SqlRefused):
            raise StoreError(f"{exc}\nthat statement writes: add --write to allow it") from None
        raise
    if fmt != "table":
        sys.stdout.write(body.decode())
        return
    if not body.strip():
        return
    result = orjson.loads(body)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in result.get("meta", []):
        table.add_column(column["name"], justify="right" if _numeric(column["type"]) else "left")
    for row in result.get("data", []):
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    rows = result.get("rows", 0)
    err.print(f"{rows} row{'s' if rows != 1 else ''}", style="dim")


def _numeric(ch_type: str) -> bool:
    bare = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return bare.startswith(("UInt", "Int", "Float", "Decimal"))


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# inbox and trace ----------------------------------------------------------------

_LABEL_STYLE = {"good": "green", "bad": "red"}


def _rows(settings: Settings, query: str) -> tuple[list[str], list[list[Any]]]:
    from thumbline.sqlclient import run_sql

    result = orjson.loads(run_sql(settings, query, fmt="JSONCompact"))
    return [c["name"] for c in result["meta"]], result["data"]


def _short(text: Any, width: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command(rich_help_panel="Read what it stored")
def inbox(
    label: Annotated[
        list[str] | None, typer.Option(help="bad, good, edit or any custom label; repeatable")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="thumb, rating, correction...; repeatable")
    ] = None,
    project: Annotated[str | None, typer.Option()] = None,
    environment: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    capability: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option(help="One user's feedback history.")] = None,
    session: Annotated[str | None, typer.Option()] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="pending (waiting for its trace), joined, orphan (no trace came) or "
            "corrected (a trace came late); default: all"
        ),
    ] = None,
    has_comment: Annotated[
        bool, typer.Option("--has-comment", help="Only with a comment.")
    ] = False,
    since: Annotated[str | None, typer.Option(help="e.g. 30m, 24h, 7d")] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", help="ISO time, UTC if no zone")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="ISO time, UTC if no zone")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The feedback inbox: newest first, with the filters of the hosted products.

    Feedback still waiting for its trace shows too, marked "waiting for trace"
    (after THUMBLINE_JOIN_PENDING_ROW_SECONDS, until its trace comes or
    THUMBLINE_JOIN_GRACE_SECONDS end).
    """
    from thumbline.queries import InboxFilter, inbox_sql, parse_since
    from thumbline.sqlclient import run_sql

    settings = cli_settings()
    try:
        filters = InboxFilter(
            labels=tuple(label or ()), kinds=tuple(kind or ()), project=project,
            environment=environment, model=model, capability=capability, user_id=user,
            session_id=session, status=status, has_comment=has_comment,
            since=parse_since(since) if since else None,
            start=start, end=end, limit=limit,  # no zone: UTC
        )  # fmt: skip
        query = inbox_sql(settings.clickhouse_database, filters)
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        sys.stdout.write(run_sql(settings, query, fmt="JSONEachRow").decode())
        return
    _, rows = _rows(settings, query)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("time", "trace", "label", "comment", "user", "session", "project/model"):
        table.add_column(name, overflow="fold" if name == "trace" else "ellipsis")
    waiting = 0
    for r in rows:
        ts, trace_id, lbl, comment, user_id, session_id, proj, mdl = r[:8]
        style = _LABEL_STYLE.get(lbl, "")
        where = Text(f"{proj}/{mdl}" if mdl else proj)
        if r[13] == "pending":  # join_status: no trace yet, so no model either
            waiting += 1
            where.append(" waiting for trace", style="yellow")
        table.add_row(
            str(ts)[:19], trace_id, f"[{style}]{lbl}[/{style}]" if style else lbl,
            _short(comment, 48), user_id, session_id, where,
        )  # fmt: skip
    out.print(table)
    note = f" ({waiting} waiting for {'its' if waiting == 1 else 'their'} trace)" if waiting else ""
    err.print(f"{len(rows)} feedback event{'s' if len(rows) != 1 else ''}{note}", style="dim")


@app.command(rich_help_panel="Read what it stored")
def rates(
    project: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    capability: Annotated[
        str | None, typer.Option(help="Per capability instead of per model.")
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="Window size in seconds (default: the base window).")
    ] = None,
    since: Annotated[str, typer.Option(help="e.g. 30m, 24h")] = "1h",
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Feedback rates per window, newest first (bad rate in red over 20%)."""
    from thumbline.queries import parse_since, rates_sql
    from thumbline.sqlclient import run_sql

    settings = cli_settings()
    try:
        query = rates_sql(
            settings.clickhouse_database, window_seconds=window or settings.rate_window_seconds,
            project=project, model=model, capability=capability, since=parse_since(since),
            limit=limit,
        )  # fmt: skip
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        sys.stdout.write(run_sql(settings, query, fmt="JSONEachRow").decode())
        return
    _, rows = _rows(settings, query)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("UTC", "project", "env", "model" if capability is None else "capability",
                 "n", "bad", "rate", "cmt", "impl", "score"):  # fmt: skip
        if name in ("n", "bad", "rate", "cmt", "impl", "score"):
            table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
        else:
            table.add_column(name, overflow="fold", min_width=5)
    for r in rows:
        start, proj, env, mdl, cap, total, _, bad, _, implicit, comments, rate, score = r
        shown = f"[red]{rate:.0%}[/red]" if rate > 0.2 else f"{rate:.0%}"
        table.add_row(
            str(start)[5:16], proj, env, mdl if cap == "*" else cap, str(total), str(bad), shown,
            str(comments), str(implicit), "" if score is None else f"{score:.2f}",
        )  # fmt: skip
    out.print(table)
    err.print(f"{len(rows)} window{'s' if len(rows) != 1 else ''}", style="dim")


@app.command(rich_help_panel="Read what it stored")
def alerts(
    state: Annotated[str | None, typer.Option(help="firing or resolved (default: both)")] = None,
    since: Annotated[str, typer.Option(help="e.g. 24h, 7d")] = "7d",
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Spike alerts, newest first, with the inbox command that shows each window."""
    from thumbline.queries import alerts_sql, parse_since
    from thumbline.sqlclient import run_sql

    if state not in (None, "firing", "resolved"):
        fail(f"--state takes firing or resolved, not {state!r}", 2)
    settings = cli_settings()
    try:
        query = alerts_sql(
            settings.clickhouse_database, state=state, since=parse_since(since), limit=limit
        )
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        sys.stdout.write(run_sql(settings, query, fmt="JSONEachRow").decode())
        return
    _, rows = _rows(settings, query)
    for r in rows:
        at, _, rule, st, proj, env, mdl, cap, rate, base, bad, total, onset, command, comments = r
        colour = "red" if st == "firing" else "green"
        dims = " ".join(
            f"{k}={v}" for k, v in (("project", proj), ("env", env), ("model", mdl),
                                    ("capability", cap)) if v and v != "*"
        )  # fmt: skip
        out.print(
            f"[{colour}]{st:<8}[/{colour}] {str(at)[:19]}  {rule}  {dims}  bad {rate:.0%} "
            f"({bad}/{total}) vs {base:.0%} baseline, since {str(onset)[:19]}",
            markup=True, soft_wrap=True,
        )  # fmt: skip
        for comment in comments[:2]:
            out.print(f"           “{_short(comment, 100)}”", markup=False)
        out.print(f"           {command}", style="dim", markup=False)
    err.print(f"{len(rows)} alert{'s' if len(rows) != 1 else ''}", style="dim")


@app.command(rich_help_panel="Read what it stored")
def trace(trace_id: Annotated[str, typer.Argument(help="The trace to show.")]) -> None:
    """A trace: its spans, then all of its feedback."""
    from thumbline.queries import InboxFilter, inbox_sql, trace_spans_sql

    settings = cli_settings()
    db = settings.clickhouse_database
    names, spans = _rows(settings, trace_spans_sql(db, trace_id))
    if not spans:
        err.print(f"no spans stored for trace {trace_id}", style="yellow")
    else:
        table = Table(
            *names[:3], "model", "latency_ms", "cost_usd", "status",
            box=None, header_style="bold", title=f"trace {trace_id}", title_justify="left",
        )  # fmt: skip
        first = spans[0]
        out.print(f"project {first[3]}  environment {first[4]}  capability {first[6] or '-'}  "
                  f"user {first[8] or '-'}  session {first[9] or '-'}")  # fmt: skip
        for s in spans:
            table.add_row(s[0] or "(trace)", s[1] or "", s[2] or "", s[5] or "",
                          _cell(s[11]), _cell(s[13]), s[14])  # fmt: skip
        out.print(table)
    _, rows = _rows(settings, inbox_sql(db, InboxFilter(trace_id=trace_id, limit=1000)))
    feedback = Table(
        "time", "label", "kind", "name", "score", "comment", "user", "status",
        box=None, header_style="bold", title="feedback", title_justify="left",
    )  # fmt: skip
    for r in rows:
        style = _LABEL_STYLE.get(r[2], "")
        feedback.add_row(
            str(r[0])[:19], f"[{style}]{r[2]}[/{style}]" if style else r[2], r[10], r[11],
            _cell(r[12]), _short(r[3], 60), r[4], r[13],
        )  # fmt: skip
    out.print(feedback)
