"""The ``thumbline`` command line: the one place that builds settings and prints."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

from schemas import FeedbackEvent, InvalidEvent, ThumblineError, TraceEvent
from schemas.topics import Topics
from thumbline import logs, runfile
from thumbline.errors import ConfigError, SqlRefused, StoreError
from thumbline.files import private_umask
from thumbline.settings import Settings, load_settings

app = typer.Typer(
    help="Thumbline: end-user feedback on LLM answers, joined with its traces, in ClickHouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
send_app = typer.Typer(help="Publish one event to Kafka (validated first).", no_args_is_help=True)
topics_app = typer.Typer(help="The Kafka topics thumbline uses.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contracts.", no_args_is_help=True)
app.add_typer(send_app, name="send")
app.add_typer(topics_app, name="topics")
keys_app = typer.Typer(help="API keys of the HTTP gateway.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(keys_app, name="keys")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    info = runfile.read(settings.run_file)
    if info is None:
        _fail(
            "no Kafka to send to: start `thumbline up` (in this directory, or with the same "
            "THUMBLINE_DATA_DIR), or set THUMBLINE_KAFKA_BOOTSTRAP"
        )
    return info.bootstrap


# up -------------------------------------------------------------------------


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Also publish a gentle stream of demo feedback.")
    ] = False,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Keep the embedded broker's messages in memory (lost when it stops; starts "
            "faster): for demos and benchmarks. Default: durable, under THUMBLINE_DATA_DIR.",
        ),
    ] = False,
) -> None:
    """Start the pipeline: broker (embedded unless configured), topics, store, stream, SQL."""
    from thumbline.runtime import Runtime

    settings = _settings(**({"broker_storage": "memory"} if memory else {}))

    async def run() -> None:
        runtime = Runtime(settings)
        with err.status("starting thumbline..."):
            started = await runtime.start()
        demo_task = stop_demo = None
        try:
            _print_started(settings, started)
            if demo:
                stop_demo = asyncio.Event()
                demo_task = asyncio.create_task(_demo(settings, started.bootstrap, stop_demo))
                out.print("demo        5 feedback/s; see them with: thumbline inbox")
            await runtime.serve_until_signalled()
            err.print("stopping...")
        finally:
            if demo_task is not None and stop_demo is not None:
                stop_demo.set()
                await asyncio.gather(demo_task, return_exceptions=True)
            await runtime.stop()

    asyncio.run(run())


async def _demo(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    from producers import FeedbackProducer
    from producers.loadgen import LoadSpec, run_load

    async with FeedbackProducer(
        bootstrap_servers=bootstrap, topic_prefix=settings.topic_prefix, **settings.kafka_kwargs()
    ) as producer:
        spec = LoadSpec(rate=5, duration=None, early_share=0.1, orphan_share=0.02, bad_share=0.2)
        await run_load(producer, spec, stop=stop)


def _print_started(settings: Settings, started: Any) -> None:
    kafka = started.bootstrap
    if started.broker_storage == "durable":
        kafka += f"  (embedded Tansu, durable in {started.broker_dir})"
    elif started.embedded_broker:
        kafka += "  (embedded Tansu, in memory: lost when it stops)"
    new = sum(1 for m in started.migrations if m.applied)
    lines = [
        "[bold green]thumbline is up[/bold green]",
        f"  Kafka       {kafka}",
        f"  topics      {started.topics.feedback.name}, {started.topics.traces.name} "
        f"({started.topics.feedback.partitions} partitions) and "
        f"{len(started.topics.all()) - 2} more",
        f"  ClickHouse  {started.store}  (database {settings.clickhouse_database}, "
        f"{new} new migration{'s' if new != 1 else ''})",
    ]
    lines.append("  stream      join_traces: feedback joined with its trace, written to ClickHouse")
    if started.join_processes > 1:
        helpers = started.join_processes - 1
        lines.append(
            f"              in {started.join_processes} processes (this one and "
            f"{helpers} helper{'s' if helpers > 1 else ''})"
        )
    lines.append(
        f"              rates: {settings.rate_window_seconds}s windows (+ "
        f"{', '.join(f'{w}s' for w in settings.sliding_windows) or 'no'} sliding), spike alerts"
    )
    if started.metrics_url:
        lines.append(f"  metrics     {started.metrics_url}")
        if started.join_processes > 1 and settings.metrics_port:
            first, last = settings.metrics_port + 1, settings.metrics_port + helpers
            lines.append(f"              join helpers: the same on ports {first}-{last}")
    if started.gateway_url:
        lines.append(
            f"  gateway     {started.gateway_url}/v1/feedback  (HTTP ingest; docs at /docs)"
        )
    if started.sql_url:
        lines.append(
            f"  SQL         {started.sql_url}/sql  (for `thumbline sql`; token in run file)"
        )
    lines.append(
        "  try         thumbline send feedback --trace-id t1 --label bad --comment 'wrong'"
    )
    lines.append('              thumbline sql "SELECT count() FROM thumbline.feedback"')
    lines.append("Ctrl-C stops.")
    out.print("\n".join(lines), markup=True, soft_wrap=True)


# sql ------------------------------------------------------------------------

_FORMATS = {"table": "JSONCompact", "json": "JSONEachRow", "csv": "CSVWithNames"}
_READONLY = 164  # ClickHouse: "Cannot execute query in readonly mode"


@app.command()
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
        _fail(f"--format must be one of {', '.join(_FORMATS)}", 2)
    settings = _settings()
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


# send -----------------------------------------------------------------------


def _parse_json_option(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what} is not JSON: {exc}", 2)
    if not isinstance(data, dict):
        _fail(f"{what} must be a JSON object", 2)
    return data


def _event(
    contract: type[FeedbackEvent] | type[TraceEvent],
    json_event: str | None,
    /,
    defaults: dict[str, Any] | None = None,
    **flags: Any,
) -> FeedbackEvent | TraceEvent:
    """The event: ``defaults``, then ``--json``, then the flags that were given; validated."""
    data = {**(defaults or {}), **_parse_json_option(json_event, "--json")}
    data.update({k: v for k, v in flags.items() if v is not None})
    return contract.parse(data)


def _send(settings: Settings, event: FeedbackEvent | TraceEvent) -> None:
    from producers import FeedbackProducer

    async def run() -> Any:
        async with FeedbackProducer(
            bootstrap_servers=_bootstrap(settings),
            topic_prefix=settings.topic_prefix,
            **settings.kafka_kwargs(),
        ) as producer:
            return await producer.send(event)

    delivery = asyncio.run(run())
    out.print(
        orjson.dumps(
            {
                "event_id": getattr(event, "event_id", None),
                "trace_id": event.trace_id,
                "span_id": event.span_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            }
        ).decode(),
        markup=False,
        soft_wrap=True,
    )


@send_app.command("feedback")
def send_feedback(
    trace_id: Annotated[str, typer.Option(help="The trace the feedback is about.")],
    label: Annotated[str | None, typer.Option(help="good, bad, neutral or custom (edit)")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="thumb, rating, score, bool, text, category, signal, correction"),
    ] = None,
    value: Annotated[
        str | None, typer.Option(help="The value, as JSON where it is not a string: 4, true, up")
    ] = None,
    comment: Annotated[str | None, typer.Option()] = None,
    correction: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="response-quality, star-rating...")] = None,
    span_id: Annotated[str | None, typer.Option()] = None,
    project: Annotated[
        str | None, typer.Option(help="The trace's project (absent: default); it joins only there.")
    ] = None,
    user_id: Annotated[str | None, typer.Option()] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Idempotency key; generated if absent.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Repeatable.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object, or @file.json")] = None,
    json_event: Annotated[
        str | None,
        typer.Option("--json", help="The whole event as JSON (or @file.json); flags override."),
    ] = None,
) -> None:
    """Send one feedback event about a trace."""
    settings = _settings()
    parsed_value: Any = value
    if value is not None:
        try:
            parsed_value = json.loads(value)
        except json.JSONDecodeError:
            parsed_value = value
    event = _event(
        FeedbackEvent,
        json_event,
        trace_id=trace_id,
        label=label,
        kind=kind,
        value=parsed_value,
        comment=comment,
        correction=correction,
        category=category,
        name=name,
        span_id=span_id,
        project=project,
        user_id=user_id,
        session_id=session_id,
        event_id=event_id,
        tags=tag or None,
        metadata=_parse_json_option(metadata, "--metadata") or None,
    )
    _send(settings, event)


@send_app.command("trace")
def send_trace(
    trace_id: Annotated[str | None, typer.Option(help="Generated if absent.")] = None,
    span_id: Annotated[
        str | None, typer.Option(help="Absent: the event is the whole trace.")
    ] = None,
    parent_span_id: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    environment: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    capability: Annotated[str | None, typer.Option()] = None,
    step: Annotated[str | None, typer.Option()] = None,
    user_id: Annotated[str | None, typer.Option()] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
    latency_ms: Annotated[float | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="ok, error or unset")] = None,
    error_message: Annotated[str | None, typer.Option("--error")] = None,
    attributes: Annotated[str | None, typer.Option(help="A JSON object, or @file.json")] = None,
    json_event: Annotated[
        str | None,
        typer.Option("--json", help="The whole event as JSON (or @file.json); flags override."),
    ] = None,
) -> None:
    """Send one trace (or span) event; prints its trace_id."""
    from producers import new_trace_id

    settings = _settings()
    event = _event(
        TraceEvent,
        json_event,
        defaults={"trace_id": new_trace_id()},
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        project=project,
        environment=environment,
        model=model,
        capability=capability,
        step=step,
        user_id=user_id,
        session_id=session_id,
        latency_ms=latency_ms,
        status=status,
        error=error_message,
        attributes=_parse_json_option(attributes, "--attributes") or None,
    )
    _send(settings, event)


# inbox and trace ----------------------------------------------------------------

_LABEL_STYLE = {"good": "green", "bad": "red"}


def _rows(settings: Settings, query: str) -> tuple[list[str], list[list[Any]]]:
    from thumbline.sqlclient import run_sql

    result = orjson.loads(run_sql(settings, query, fmt="JSONCompact"))
    return [c["name"] for c in result["meta"]], result["data"]


def _short(text: Any, width: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
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
    """The feedback inbox: newest first, with the filters of the hosted products."""
    from thumbline.queries import InboxFilter, inbox_sql, parse_since
    from thumbline.sqlclient import run_sql

    settings = _settings()
    try:
        filters = InboxFilter(
            labels=tuple(label or ()), kinds=tuple(kind or ()), project=project,
            environment=environment, model=model, capability=capability, user_id=user,
            session_id=session, has_comment=has_comment,
            since=parse_since(since) if since else None,
            start=start, end=end, limit=limit,  # no zone: UTC
        )  # fmt: skip
        query = inbox_sql(settings.clickhouse_database, filters)
    except ValueError as exc:
        _fail(str(exc), 2)
    if as_json:
        sys.stdout.write(run_sql(settings, query, fmt="JSONEachRow").decode())
        return
    _, rows = _rows(settings, query)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("time", "trace", "label", "comment", "user", "session", "project/model"):
        table.add_column(name, overflow="fold" if name == "trace" else "ellipsis")
    for r in rows:
        ts, trace_id, lbl, comment, user_id, session_id, proj, mdl = r[:8]
        style = _LABEL_STYLE.get(lbl, "")
        table.add_row(
            str(ts)[:19], trace_id, f"[{style}]{lbl}[/{style}]" if style else lbl,
            _short(comment, 48), user_id, session_id, f"{proj}/{mdl}" if mdl else proj,
        )  # fmt: skip
    out.print(table)
    err.print(f"{len(rows)} feedback event{'s' if len(rows) != 1 else ''}", style="dim")


@app.command()
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

    settings = _settings()
    try:
        query = rates_sql(
            settings.clickhouse_database, window_seconds=window or settings.rate_window_seconds,
            project=project, model=model, capability=capability, since=parse_since(since),
            limit=limit,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc), 2)
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


@app.command()
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
        _fail(f"--state takes firing or resolved, not {state!r}", 2)
    settings = _settings()
    try:
        query = alerts_sql(
            settings.clickhouse_database, state=state, since=parse_since(since), limit=limit
        )
    except ValueError as exc:
        _fail(str(exc), 2)
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


@app.command()
def trace(trace_id: Annotated[str, typer.Argument(help="The trace to show.")]) -> None:
    """A trace: its spans, then all of its feedback."""
    from thumbline.queries import InboxFilter, inbox_sql, trace_spans_sql

    settings = _settings()
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


# loadgen ----------------------------------------------------------------------


def _parse_spike(text: str | None) -> Any:
    from producers.loadgen import Spike

    if not text:
        return None
    fields: dict[str, Any] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key in ("start", "end", "bad"):
            try:
                fields["bad_share" if key == "bad" else key] = float(value)
            except ValueError:
                _fail(f"--spike {key} must be a number, got {value!r}", 2)
        elif key in ("project", "model", "capability"):
            fields[key] = value.strip()
        else:
            _fail(
                f"--spike takes start=, end=, bad=, project=, model=, capability= (got {key!r})", 2
            )
    if "start" not in fields or "end" not in fields:
        _fail("--spike needs start= and end= (seconds into the run)", 2)
    return Spike(**fields)


@app.command()
def loadgen(
    rate: Annotated[float, typer.Option(help="Feedback events per second.")] = 100.0,
    duration: Annotated[float | None, typer.Option(help="Seconds; 0 runs until Ctrl-C.")] = 10.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many feedback events.")] = None,
    projects: Annotated[int, typer.Option()] = 3,
    models: Annotated[int, typer.Option()] = 4,
    capabilities: Annotated[int, typer.Option()] = 3,
    users: Annotated[int, typer.Option()] = 1000,
    bad: Annotated[float, typer.Option(help="Share of bad feedback.")] = 0.1,
    early: Annotated[float, typer.Option(help="Share of feedback sent before its trace.")] = 0.1,
    orphans: Annotated[
        float, typer.Option(help="Share of feedback whose trace never comes.")
    ] = 0.0,
    spike: Annotated[
        str | None,
        typer.Option(help="e.g. start=30,end=90,bad=0.6,project=project-0,model=model-1"),
    ] = None,
    seed: Annotated[int, typer.Option()] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Publish realistic traces and feedback, and report exactly what was sent."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from producers import FeedbackProducer
    from producers.loadgen import LoadSpec, run_load

    settings = _settings()
    spec = LoadSpec(
        rate=rate, duration=duration or None, count=count, projects=projects, models=models,
        capabilities=capabilities, users=users, bad_share=bad, early_share=early,
        orphan_share=orphans, spike=_parse_spike(spike), seed=seed,
    )  # fmt: skip
    total = count or (rate * duration if duration else None)

    async def run() -> Any:
        async with FeedbackProducer(
            bootstrap_servers=_bootstrap(settings),
            topic_prefix=settings.topic_prefix,
            **settings.kafka_kwargs(),
        ) as producer:
            with Progress(
                TextColumn("loadgen"), BarColumn(), TextColumn("{task.completed:,.0f} feedback"),
                TimeElapsedColumn(), console=err, transient=True, disable=as_json,
            ) as progress:  # fmt: skip
                task = progress.add_task("send", total=total)
                return await run_load(
                    producer,
                    spec,
                    on_progress=lambda r: progress.update(task, completed=r.feedback),
                )

    report = asyncio.run(run())
    if as_json:
        out.print(orjson.dumps(report.as_dict()).decode(), markup=False, soft_wrap=True)
        return
    rate_sent = report.feedback / report.seconds if report.seconds else 0.0
    out.print(
        f"sent {report.feedback:,} feedback and {report.traces:,} traces in "
        f"{report.seconds:.1f}s ({rate_sent:,.0f} feedback/s); {report.early:,} before their "
        f"trace, {report.orphans:,} without one; labels {dict(report.labels)}"
    )
    if spec.spike:
        out.print(
            f"spike {report.spike_from} .. {report.spike_to}: "
            f"{report.spike_bad}/{report.spike_total} bad"
        )


# topics, migrations, schemas ----------------------------------------------------


@topics_app.command("list")
def topics_list() -> None:
    """The topics of this configuration, with partitions, keys and contracts."""
    settings = _settings()
    table = Table("topic", "partitions", "key", "contract", "what", box=None, header_style="bold")
    for topic in Topics.build(settings.topic_prefix, settings.partitions).all():
        table.add_row(
            topic.name,
            str(topic.partitions),
            topic.key or "-",
            topic.model.__name__,
            topic.description,
        )
    out.print(table)


@topics_app.command("create")
def topics_create() -> None:
    """Create the missing topics on THUMBLINE_KAFKA_BOOTSTRAP (or the running embedded broker)."""
    from thumbline.kafka import ensure_topics

    settings = _settings()
    topics = Topics.build(settings.topic_prefix, settings.partitions)
    created = asyncio.run(
        ensure_topics(
            _bootstrap(settings),
            topics.all(),
            replication_factor=settings.replication_factor,
            kafka_kwargs=settings.kafka_kwargs(),
        )
    )
    out.print(f"created {len(created)} topic(s): {', '.join(created) or 'none needed'}")


@app.command()
def migrate() -> None:
    """Apply the ClickHouse migrations (`thumbline up` does this too)."""
    from thumbline.store import apply_migrations, open_client

    settings = _settings()
    client = open_client(settings)
    try:
        applied = apply_migrations(client, settings.clickhouse_database)
    finally:
        client.close()
    for m in applied:
        state = "applied" if m.applied else "already there"
        out.print(f"{m.version:04d}_{m.name}: {state}")


# gateway and keys ------------------------------------------------------------


@app.command()
def gateway() -> None:
    """Run the HTTP gateway alone, against the configured broker and store."""
    from prometheus_client import CollectorRegistry

    from thumbline.gateway import GatewayProcess
    from thumbline.metrics import Metrics
    from thumbline.runtime import Runtime
    from thumbline.store import apply_migrations, open_client

    settings = _settings()
    bootstrap = _bootstrap(settings)

    async def run() -> None:
        client = await asyncio.to_thread(open_client, settings)
        try:
            await asyncio.to_thread(apply_migrations, client, settings.clickhouse_database)
        finally:
            client.close()
        process = await GatewayProcess(settings, bootstrap, Metrics(CollectorRegistry())).start()
        out.print(f"gateway     {process.url}/v1/feedback  (Kafka {bootstrap}); Ctrl-C stops.")
        try:
            await Runtime(settings).serve_until_signalled()
        finally:
            await process.stop()

    asyncio.run(run())


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="ingest (write-only), read or admin.")] = "ingest",
    project: Annotated[
        str, typer.Option(help="The one project the key may use (not for admin keys).")
    ] = "",
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Create an API key; the full key is shown this once."""
    from thumbline.keys import create_key

    key = create_key(_settings(), scope=scope, project=project, name=name)  # type: ignore[arg-type]
    out.print(key, markup=False)
    err.print(f"{scope} key for {project or 'every project'}: store it now, it is not shown again")


@keys_app.command("list")
def keys_list() -> None:
    """The keys: id, scope, project, name, created, revoked (never the secret)."""
    from thumbline.keys import list_keys

    table = Table("key id", "scope", "project", "name", "created", "revoked")
    for k in list_keys(_settings()):
        created = k.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(k.key_id, k.scope, k.project or "*", k.name, created, "yes" * k.revoked)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (or the full key).")],
) -> None:
    """Revoke a key: the gateway refuses it from now on."""
    from thumbline.keys import revoke_key

    if not revoke_key(_settings(), key_id):
        _fail(f"no key {key_id!r} (thumbline keys list shows them)")
    out.print(f"revoked {key_id}")


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write *.schema.json")] = Path(
        "schemas/json"
    ),
) -> None:
    """Write the JSON Schema of every topic."""
    from schemas.jsonschema import write

    for path in write(directory):
        out.print(str(path))


def main() -> None:
    """Entrypoint: turns thumbline's errors into a message and an exit code."""
    # Before any command creates a file: the chDB store (opened directly when no
    # owner runs), its logs and temp files hold every comment and user id.
    private_umask()
    try:
        app()
    except InvalidEvent as exc:
        err.print(f"error: {exc}\nnothing was sent.", markup=False, soft_wrap=True)
        sys.exit(2)
    except ConfigError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except ThumblineError as exc:
        hint = " (it may work if you try again)" if exc.retriable else ""
        err.print(f"error: {exc}{hint}", markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
