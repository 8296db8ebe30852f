"""``thumbline inbox``: the feedback, newest first, or as it arrives (``--follow``)."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import typer

from thumbline.cli.common import SQL, app, err, fail, out, store_settings
from thumbline.cli.layout import Column, cut, fitted
from thumbline.cli.output import LABEL, json_rows, listing, when
from thumbline.cli.output import rows as rows_of
from thumbline.errors import ThumblineError
from thumbline.inbox import INBOX_COLUMNS, InboxFilter
from thumbline.settings import Settings

#: The inbox's columns. The comment is cut first, then what was said, then project/model;
#: an id (trace, user, session) is never cut: optional columns are left out whole when
#: the width is short, the session first. ``--json`` has every column.
INBOX = (
    Column("time"), Column("trace"), Column("label"), Column("comment", cut_to=10),
    Column("feedback", cut_to=10, drop=5), Column("by", drop=3), Column("user", drop=4),
    Column("session", drop=1), Column("project/model", cut_to=10, drop=2),
)  # fmt: skip

#: How often ``--follow`` asks the store for new rows, in seconds.
FOLLOW_EVERY = 1.0
#: How far back each poll of ``--follow`` looks again: a row the store stamped just
#: before the previous poll may become visible only after it (its insert was still
#: running). Rows already printed are remembered that long, so none prints twice.
FOLLOW_LOOKBACK = timedelta(seconds=30)
#: The most rows one poll reads.
FOLLOW_BATCH = 5_000

_COL = {name: i for i, name in enumerate(INBOX_COLUMNS)}


def said(kind: str, name: str, value: Any, score: Any) -> str:
    """What the feedback said, short: ``rating:stars=4 0.75``, ``thumb=up``."""
    what = name if not kind or name == kind else f"{kind}:{name}" if name else kind
    if value not in (None, ""):
        what += f"={value}"
    if score is not None:
        what += f" {float(score):.2f}"
    return what


def cells(row: dict[str, Any], zone: tzinfo | None) -> dict[str, str]:
    """A row of the inbox (by column name) as the table's cells."""
    comment = "" if row["comment"] is None else str(row["comment"])
    if row["correction"]:
        comment += f"{' ' if comment else ''}→ {row['correction']}"
    model, project = row["model"], row["project"]
    return {
        "time": when(row["ts"], zone), "trace": target_of(row), "label": row["label"],
        "comment": comment.replace("\n", " "),
        "feedback": said(row["kind"], row["name"], row["value"], row["score"]),
        "by": row["annotator"], "user": row["user_id"], "session": row["session_id"],
        "project/model": (f"{project}/{model}" if model else project)
        + (" (waiting for trace)" if row["join_status"] == "pending" else ""),
    }  # fmt: skip


def target_of(row: dict[str, Any]) -> str:
    """What the feedback is about: its trace id, else its conversation's or session's."""
    if row["trace_id"]:
        return str(row["trace_id"])
    if row.get("conversation_id"):
        return f"conversation {row['conversation_id']}"
    if row.get("session_id"):
        return f"session {row['session_id']}"
    return "-"


def zone_of(name: str | None) -> tzinfo | None:
    """``--tz``: None (UTC, printed with Z), the machine's zone for ``local``, or an IANA name."""
    if name is None or name.upper() in ("UTC", "Z"):
        return None
    if name == "local":
        return datetime.now().astimezone().tzinfo
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"--tz takes UTC, local or a zone name like Europe/Paris, not {name!r}", 2)


@app.command(rich_help_panel="Read what it stored", env=SQL)
def inbox(
    label: Annotated[
        list[str] | None, typer.Option(help="bad, good, edit or any custom label; repeatable")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="thumb, rating, correction...; repeatable")
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option(help="The feedback's name (helpful, stars...); repeatable")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="The feedback's category; repeatable")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Feedback with this tag (any of them); repeatable")
    ] = None,
    annotator: Annotated[
        list[str] | None,
        typer.Option(help="Who gave it: end_user, reviewer, evaluator or code; repeatable"),
    ] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's feedback.")] = None,
    environment: Annotated[
        str | None, typer.Option(help="Only this environment (prod, staging...).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only answers of this model.")] = None,
    capability: Annotated[
        str | None, typer.Option(help="Only this capability (what the app was doing).")
    ] = None,
    user_id: Annotated[str | None, typer.Option(help="One user's feedback history.")] = None,
    session_id: Annotated[str | None, typer.Option(help="One session's feedback.")] = None,
    conversation_id: Annotated[
        str | None,
        typer.Option("--conversation-id", "--conversation", help="One conversation's feedback."),
    ] = None,
    trace_id: Annotated[str | None, typer.Option(help="One trace's feedback.")] = None,
    old_user: Annotated[str | None, typer.Option("--user", hidden=True)] = None,
    old_session: Annotated[str | None, typer.Option("--session", hidden=True)] = None,
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
    since: Annotated[
        str | None, typer.Option(help="Feedback of this long ago or later, e.g. 30m, 24h, 7d")
    ] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", help="ISO time, UTC if no zone")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="ISO time, UTC if no zone")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, every column.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-F", help="Print feedback as the store takes it, until Ctrl-C."),
    ] = False,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz", help="The table's times in this zone (local, Europe/Paris...); default UTC"
        ),
    ] = None,
) -> None:
    """The feedback inbox: newest first, with the filters of the hosted products.

    Every time carries its zone: UTC with Z unless --tz says otherwise (--json: UTC, Z).
    Feedback still waiting for its trace shows too, marked "waiting for trace"
    (after THUMBLINE_JOIN_PENDING_ROW_SECONDS, until its trace comes or
    THUMBLINE_JOIN_GRACE_SECONDS end). With --follow the rows the store takes
    from now on are printed as they come, oldest first, each once.
    """
    from thumbline.queries import parse_since

    zone = zone_of(tz)
    settings = store_settings()
    try:
        filters = InboxFilter(
            labels=tuple(label or ()), kinds=tuple(kind or ()), names=tuple(name or ()),
            categories=tuple(category or ()), tags=tuple(tag or ()),
            annotators=tuple(annotator or ()), project=project, environment=environment,
            model=model, capability=capability, user_id=user_id or old_user,
            session_id=session_id or old_session, trace_id=trace_id,
            conversation_id=conversation_id, status=status, has_comment=has_comment,
            since=parse_since(since) if since else None,
            start=start, end=end, limit=limit,  # no zone: UTC
        )  # fmt: skip
        filters.check()
    except ValueError as exc:
        fail(str(exc), 2)
    if follow:
        _follow(settings, filters, as_json, zone)
        return
    _list(settings, filters, as_json, zone)


def _list(settings: Settings, filters: InboxFilter, as_json: bool, zone: tzinfo | None) -> None:
    from thumbline.inbox import inbox_sql

    found = listing(settings, lambda: inbox_sql(settings.clickhouse_database, filters), as_json)
    if found is None:
        return
    rows = [dict(zip(INBOX_COLUMNS, r, strict=False)) for r in found]
    waiting = sum(1 for r in rows if r["join_status"] == "pending")  # no model yet either
    table, hidden = fitted(INBOX, [cells(r, zone) for r in rows], out.width, styles=LABEL)
    out.print(table)
    notes = [f"{len(rows)} feedback event{'s' if len(rows) != 1 else ''}"]
    if waiting:
        notes.append(f"{waiting} waiting for {'its' if waiting == 1 else 'their'} trace")
    if hidden:
        notes.append(f"{', '.join(hidden)} left out (--json has all)")
    # the note wraps at the width like the rows: it holds no id to keep whole
    err.print("; ".join(notes), style="dim", markup=False, width=out.width)


def _follow(settings: Settings, filters: InboxFilter, as_json: bool, zone: tzinfo | None) -> None:
    """Print the filtered rows the store takes from now on, each once, until Ctrl-C.

    Polls on ``inserted_at`` (the store's own clock, in the order rows become
    visible) rather than on the event time, which senders set and which may be
    late; each poll looks :data:`FOLLOW_LOOKBACK` back and skips event ids
    already printed, so a row neither repeats nor is skipped when its insert
    ended after a poll. A newer version of a printed event (its trace came)
    is not printed again.
    """
    from thumbline.inbox import store_now_sql, store_time, stored_since_sql

    db = settings.clickhouse_database
    shown = 0
    seen: dict[str, datetime] = {}  # event id -> when the store took it
    try:
        now = datetime.fromisoformat(rows_of(settings, store_now_sql())[1][0][0] + "+00:00")
        floor, first = now - FOLLOW_LOOKBACK, True
        if not as_json:
            err.print("following new feedback (Ctrl-C stops)", style="dim", markup=False)
        while True:
            try:
                query = stored_since_sql(db, filters, store_time(floor), limit=FOLLOW_BATCH)
                batch = json_rows(settings, query)
            except ThumblineError as exc:
                if not exc.retriable:
                    raise
                time.sleep(FOLLOW_EVERY)  # the store restarts or is busy: ask again
                continue
            fresh, at = [], floor
            for row in batch:
                at = datetime.fromisoformat(row.pop("inserted_at"))
                if row["event_id"] not in seen:
                    fresh.append(row)
                seen[row["event_id"]] = max(at, seen.get(row["event_id"], at))
            if not first:
                shown += len(fresh)
                _print(fresh, as_json, zone)
            first = False
            if len(batch) >= FOLLOW_BATCH:  # more than one poll reads: on from the last one
                floor = at
                continue
            newest = max(seen.values(), default=now)
            floor = max(floor, newest - FOLLOW_LOOKBACK)
            seen = {k: v for k, v in seen.items() if v >= floor}
            time.sleep(FOLLOW_EVERY)
    except KeyboardInterrupt:
        if not as_json:
            err.print(f"{shown} new feedback event{'s' if shown != 1 else ''}", style="dim")


def _print(rows: list[dict[str, Any]], as_json: bool, zone: tzinfo | None) -> None:
    """New rows: JSON lines, or one line each cut to the width (ids first, comment last)."""
    for row in rows:
        if as_json:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
            continue
        c = cells(row, zone)
        line = "  ".join(
            (c["time"], f"{c['label']:<7}", c["trace"], c["feedback"], c["by"],
             c["project/model"], c["comment"])
        )  # fmt: skip
        out.print(cut(line, out.width), markup=False, highlight=False, soft_wrap=True)
    sys.stdout.flush()
