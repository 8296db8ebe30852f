"""Reading the store: ``sql``, ``rates``, ``alerts`` and ``trace`` (``inbox``: its own module)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from thumbline.cli.common import SQL, app, err, fail, out, store_settings
from thumbline.cli.layout import Column, fitted
from thumbline.cli.output import LABEL, cell, listing, short, when
from thumbline.cli.output import rows as rows_of
from thumbline.errors import SqlRefused, StoreError

_FORMATS = {"table": "JSONCompact", "json": "JSONEachRow", "csv": "CSVWithNames"}
_READONLY = 164  # ClickHouse: "Cannot execute query in readonly mode"


@app.command(rich_help_panel="Read what it stored", env=SQL)
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
    settings = store_settings()
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
    times = [i for i, c in enumerate(result.get("meta", [])) if "DateTime" in c["type"]]
    for row in result.get("data", []):
        table.add_row(*(when(v) if i in times else cell(v) for i, v in enumerate(row)))
    out.print(table)
    rows = result.get("rows", 0)
    err.print(f"{rows} row{'s' if rows != 1 else ''}", style="dim")


def _numeric(ch_type: str) -> bool:
    bare = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return bare.startswith(("UInt", "Int", "Float", "Decimal"))


# trace ----------------------------------------------------------------

#: Lines of the terminal a question or an answer may take in ``thumbline trace``.
CONTENT_LINES = 3


def _content(spans: list[list[Any]], full: bool) -> int:
    """Print each span's question and answer (columns 16 and 17 of trace_spans_sql),
    shortened to a few lines of the terminal unless ``full``; return how many were."""
    shortened = 0
    room = CONTENT_LINES * max(out.width - 10, 20)
    for s in spans:
        if not (s[16] or s[17]):
            continue
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for label, text in (("input", s[16]), ("output", s[17])):
            if text:
                shown = text if full else short(text, room)
                shortened += shown != text
                grid.add_row(label, Text(shown))
        out.print(Text(f"{s[0] or '(trace)'}{'  ' + s[2] if s[2] else ''}", style="bold"))
        out.print(Padding(grid, (0, 0, 0, 2)))
    return shortened


#: A trace's feedback: the comment and the name give way, then the user, then who gave it.
_FEEDBACK = (
    Column("time"), Column("label"), Column("kind"), Column("name", cut_to=8), Column("score"),
    Column("comment", cut_to=10), Column("by", drop=2), Column("user", drop=1), Column("status"),
)  # fmt: skip
#: A trace's spans: ids whole; the name and the model give way.
_SPANS = (
    Column("span_id"), Column("parent_span_id"), Column("name", cut_to=8),
    Column("model", cut_to=8), Column("latency_ms", right=True), Column("cost_usd", right=True),
    Column("status"),
)  # fmt: skip
_RATE_NUMBERS = ("n", "bad", "rate", "cmt", "impl", "score")


@app.command(
    rich_help_panel="Read what it stored",
    env=(*SQL, "rate_window_seconds", "rate_sliding_seconds"),
)
def rates(
    project: Annotated[str | None, typer.Option(help="Only this project's windows.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's windows.")] = None,
    capability: Annotated[
        str | None, typer.Option(help="Per capability instead of per model.")
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            help="Window size in seconds: the base window (the default) or a sliding one "
            "(THUMBLINE_RATE_WINDOW_SECONDS, THUMBLINE_RATE_SLIDING_SECONDS)."
        ),
    ] = None,
    since: Annotated[
        str, typer.Option(help="Windows that started this long ago or later, e.g. 30m, 24h")
    ] = "1h",
    limit: Annotated[int, typer.Option(help="Show at most this many windows.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Feedback rates per window, newest first (bad rate in red over 20%)."""
    from thumbline.queries import parse_since, rates_sql

    settings = store_settings()
    kept = (settings.rate_window_seconds, *settings.sliding_windows)
    if window is not None and window not in kept:
        fail(
            f"the rates keep no {window} s windows: --window takes "
            f"{settings.rate_window_seconds} (the base window, THUMBLINE_RATE_WINDOW_SECONDS) or "
            f"{', '.join(map(str, settings.sliding_windows)) or 'no'} (sliding, "
            "THUMBLINE_RATE_SLIDING_SECONDS)",
            2,
        )
    rows = listing(settings, lambda: rates_sql(
        settings.clickhouse_database, window_seconds=window or settings.rate_window_seconds,
        project=project, model=model, capability=capability, since=parse_since(since),
        limit=limit,
    ), as_json)  # fmt: skip
    if rows is None:
        return
    dimension = "model" if capability is None else "capability"
    columns = (
        Column("window start"), Column("project", cut_to=5), Column("env", cut_to=5),
        Column(dimension, cut_to=5), *(Column(n, right=True) for n in _RATE_NUMBERS),
    )  # fmt: skip
    cells = []
    for r in rows:
        start, proj, env, mdl, cap, total, _, bad, _, implicit, comments, rate, score = r
        cells.append(dict(zip((c.name for c in columns), (
            when(start), proj, env, mdl if cap == "*" else cap, str(total), str(bad),
            f"{rate:.0%}", str(comments), str(implicit), "" if score is None else f"{score:.2f}",
        ), strict=True)))  # fmt: skip
    red = {"rate": lambda text: "red" if int(text.rstrip("%")) > 20 else ""}
    out.print(fitted(columns, cells, out.width, styles=red)[0])
    err.print(f"{len(rows)} window{'s' if len(rows) != 1 else ''}", style="dim")


@app.command(rich_help_panel="Read what it stored", env=SQL)
def alerts(
    state: Annotated[str | None, typer.Option(help="firing or resolved (default: both)")] = None,
    since: Annotated[
        str, typer.Option(help="Alerts of this long ago or later, e.g. 24h, 7d")
    ] = "7d",
    limit: Annotated[int, typer.Option(help="Show at most this many alerts.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Spike alerts, newest first, with the inbox command that shows each window."""
    from thumbline.queries import alerts_sql, parse_since

    if state not in (None, "firing", "resolved"):
        fail(f"--state takes firing or resolved, not {state!r}", 2)
    settings = store_settings()
    rows = listing(settings, lambda: alerts_sql(
        settings.clickhouse_database, state=state, since=parse_since(since), limit=limit
    ), as_json)  # fmt: skip
    if rows is None:
        return
    for r in rows:
        at, _, rule, st, proj, env, mdl, cap, rate, base, bad, total, onset, command, comments = r
        colour = "red" if st == "firing" else "green"
        dims = " ".join(
            f"{k}={v}" for k, v in (("project", proj), ("env", env), ("model", mdl),
                                    ("capability", cap)) if v and v != "*"
        )  # fmt: skip
        # Lines that fit the width; the command on a line of its own that is never broken
        # (soft_wrap: longer than the width, it runs past it and still copies whole).
        out.print(f"[{colour}]{st:<8}[/{colour}] {when(at)}  {escape(rule)}", markup=True)
        out.print(f"  {dims}", markup=False, soft_wrap=True)  # names: never cut
        out.print(
            f"  bad {rate:.0%} ({bad}/{total}) vs {base:.0%} baseline, since {when(onset)}",
            markup=False,
        )
        for comment in comments[:2]:
            out.print(f"  “{short(comment, out.width - 4)}”", markup=False)
        out.print(f"  {command}", style="dim", markup=False, soft_wrap=True)
    err.print(f"{len(rows)} alert{'s' if len(rows) != 1 else ''}", style="dim")


@app.command(rich_help_panel="Read what it stored", env=SQL)
def trace(
    trace_id: Annotated[str | None, typer.Argument(help="The trace to show.")] = None,
    conversation: Annotated[
        str | None,
        typer.Option(
            "--conversation",
            metavar="ID",
            help="Show a conversation instead: its traces, then all feedback on them and on "
            "the conversation itself.",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Print the question and the answer whole.")
    ] = False,
) -> None:
    """A trace: its spans, the question and the answer, then all of its feedback."""
    from thumbline.queries import InboxFilter, conversation_spans_sql, inbox_sql, trace_spans_sql

    if (trace_id is None) == (conversation is None):
        fail("give a trace id, or --conversation ID for a conversation (not both)", 2)
    settings = store_settings()
    db = settings.clickhouse_database
    try:
        if conversation is not None:
            own = inbox_sql(db, InboxFilter(conversation_id=conversation, limit=1000))
            what = f"conversation {escape(conversation)}"
        else:
            assert trace_id is not None  # noqa: S101 (checked above)
            own = inbox_sql(db, InboxFilter(trace_id=trace_id, limit=1000))
            what = f"trace {escape(trace_id)}"
    except ValueError as exc:  # an id longer than any stored
        fail(str(exc), 2)
    spans_sql = (
        conversation_spans_sql(db, conversation) if conversation is not None
        else trace_spans_sql(db, trace_id or "")
    )  # fmt: skip
    _, spans = rows_of(settings, spans_sql)
    _, rows = rows_of(settings, own)
    if not spans and not rows:
        fail(
            f"nothing is stored for {what}: no spans, no feedback. Ids are exact: "
            "`thumbline inbox` lists recent ones"
        )
    shortened = 0
    if not spans:
        err.print(f"no spans stored for {what}", style="yellow", markup=False)
    else:
        first = spans[0]
        out.print(
            f"project {first[3]}  environment {first[4]}  capability {first[6] or '-'}  "
            f"user {first[8] or '-'}  session {first[9] or '-'}", markup=False, soft_wrap=True,
        )  # fmt: skip
        traces: dict[str, list[list[Any]]] = {}  # a conversation's spans come with their trace
        for s in spans:
            traces.setdefault(s[18] if conversation else trace_id or "", []).append(s)
        for shown, its in traces.items():
            span_cells = [
                dict(zip((c.name for c in _SPANS), (
                    s[0] or "(trace)", s[1] or "", s[2] or "", s[5] or "", cell(s[11]),
                    cell(s[13]), s[14],
                ), strict=True))
                for s in its
            ]  # fmt: skip
            title = f"trace {escape(shown)}"
            out.print(fitted(_SPANS, span_cells, out.width, title=title)[0])
            shortened += _content(its, full)
    columns = ((Column("trace"),) if conversation else ()) + _FEEDBACK
    cells = [
        dict(zip((c.name for c in columns), (
            *((r[1] or "(conversation)",) if conversation else ()),
            when(r[0]), r[2], r[10], r[11], cell(r[12]), "" if r[3] is None else str(r[3]),
            r[15], r[4], r[13],
        ), strict=True))
        for r in rows
    ]  # fmt: skip
    feedback, _ = fitted(columns, cells, out.width, styles=LABEL, title="feedback")
    out.print(feedback)
    if shortened:
        err.print(
            f"{shortened} text{'s' if shortened != 1 else ''} shortened for the terminal: "
            "--full prints them whole", style="dim", markup=False, width=out.width,
        )  # fmt: skip
