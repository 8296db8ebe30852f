"""Running thumbline: ``up``, ``gateway``, ``migrate`` and ``loadgen``."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from typing import Annotated, Any

import orjson
import typer

from thumbline.cli.common import KAFKA, STORE, app, cli_settings, err, fail, find_bootstrap, out
from thumbline.settings import Settings


@app.command(rich_help_panel="Run the pipeline", env=("*",))
def up(
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Also publish a gentle stream of demo feedback (5 a second), with a spike of "
            "bad feedback on one model 90 s in that fires an alert and resolves it.",
        ),
    ] = False,
    demo_spike: Annotated[
        str | None,
        typer.Option(
            help="The demo's spike: start=90,end=210,bad=0.7,model=comet-mini (seconds into "
            "the demo; what is left out stays as it is), or off. Default: the next model "
            "each run.",
        ),
    ] = None,
    demo_speed: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Play the demo this many times faster, with as many more events a second: "
            "for alert rules with short windows (THUMBLINE_RATE_WINDOW_SECONDS).",
        ),
    ] = 1.0,
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
    from thumbline.producers.loadgen import demo_spec
    from thumbline.server.runtime import Runtime

    settings = cli_settings(**({"broker_storage": "memory"} if memory else {}))
    if not demo and (demo_spike is not None or demo_speed != 1.0):
        fail("--demo-spike and --demo-speed go with --demo", 2)
    spike = _demo_spike(settings, demo_spike) if demo else None

    async def run() -> None:
        runtime = Runtime(settings)
        with err.status("starting thumbline..."):
            started = await runtime.start()
        demo_task = stop_demo = None
        try:
            _print_started(settings, started)
            if demo:
                stop_demo = asyncio.Event()
                spec = demo_spec(spike=spike, speed=demo_speed)
                _remember_demo_spike(settings, spike)
                demo_task = asyncio.create_task(_demo(settings, started.bootstrap, spec, stop_demo))
                out.print(_describe_demo(spec, started.gateway_url), soft_wrap=True)
            await runtime.serve_until_signalled()
            err.print("stopping...")
        finally:
            if demo_task is not None and stop_demo is not None:
                stop_demo.set()
                await asyncio.gather(demo_task, return_exceptions=True)
            await runtime.stop()

    asyncio.run(run())


async def _demo(settings: Settings, bootstrap: str, spec: Any, stop: asyncio.Event) -> None:
    from thumbline.producers import FeedbackProducer
    from thumbline.producers.loadgen import run_load

    async with FeedbackProducer(
        bootstrap_servers=bootstrap, topic_prefix=settings.topic_prefix, **settings.kafka_kwargs()
    ) as producer:
        await run_load(producer, spec, stop=stop)


def _demo_spike(settings: Settings, text: str | None) -> Any:
    """The demo's spike: ``--demo-spike`` on top of the default, on the model after the one
    the last demo in this data dir spiked (:func:`_remember_demo_spike`), so that a restarted
    demo does not spike a model whose last hour, its baseline, holds the previous spike, nor
    one cooling down after it."""
    from thumbline.producers.loadgen import DEMO_CAPABILITIES, DEMO_MODELS, DEMO_SPIKE

    if text is not None and text.strip().lower() in ("off", "none", "no"):
        return None
    remembered = settings.data_dir / "demo.json"
    try:
        last = orjson.loads(remembered.read_bytes()).get("spike_model")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        last = None
    model = DEMO_SPIKE.model
    if last in DEMO_MODELS:
        model = DEMO_MODELS[(DEMO_MODELS.index(last) + 1) % len(DEMO_MODELS)]
    spike = _parse_spike(text, option="--demo-spike", base=replace(DEMO_SPIKE, model=model))
    for key, known in (("project", ("shop",)), ("model", DEMO_MODELS),
                       ("capability", DEMO_CAPABILITIES)):  # fmt: skip
        value = getattr(spike, key)
        if value is not None and value not in known:
            fail(f"--demo-spike {key}={value} is not in the demo: take {' or '.join(known)}", 2)
    return spike


def _remember_demo_spike(settings: Settings, spike: Any) -> None:
    if spike is not None and spike.model is not None:
        (settings.data_dir / "demo.json").write_bytes(orjson.dumps({"spike_model": spike.model}))


def _describe_demo(spec: Any, web: str | None = None) -> str:
    where = f"{web}/ or thumbline inbox" if web else "thumbline inbox"
    line = f"demo        {spec.rate:g} feedback/s, a shop's assistant; see them: {where}"
    spike = spec.spike
    if spike is None:
        return line
    where = " ".join(
        f"{key} {getattr(spike, key)}" for key in ("project", "model", "capability")
        if getattr(spike, key) is not None
    ) or "every model"  # fmt: skip
    return (
        f"{line}\n            spike {_clock(spike.start)}-{_clock(spike.end)} on {where} "
        f"({spike.bad_share:.0%} bad): thumbline alerts" + (f" or {web}/rates" if web else "")
    )


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


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
        lines.append(f"  web         {started.gateway_url}/  (inbox, trace, rates, alerts)")
        lines.append(
            f"  gateway     {started.gateway_url}/v1/feedback  (HTTP ingest; docs at /docs)"
        )
    if started.sql_url:
        lines.append(
            f"  SQL         {started.sql_url}/sql  (for `thumbline sql`; token in run file)"
        )
        lines.append(
            f"  endpoint    {started.sql_url}/  (the store as a ClickHouse HTTP server, for "
            "workers and tools: `thumbline store url [--reader]`)"
        )
    lines.append(
        "  try         thumbline send feedback --trace-id t1 --label bad --comment 'wrong'"
    )
    lines.append('              thumbline sql "SELECT count() FROM thumbline.feedback"')
    lines.append("Ctrl-C stops.")
    out.print("\n".join(lines), markup=True, soft_wrap=True)


@app.command(rich_help_panel="Run the pipeline", env=(*STORE, "retention_*"))
def migrate() -> None:
    """Apply the ClickHouse migrations and the retention settings (`thumbline up` does too)."""
    from thumbline.store import apply_migrations, apply_retention, open_client

    settings = cli_settings()
    database, cluster = settings.clickhouse_database, settings.clickhouse_cluster
    client = open_client(settings)
    try:
        applied = apply_migrations(client, database, cluster=cluster)
        retention = apply_retention(client, database, settings.retention_days, cluster=cluster)
    finally:
        client.close()
    for m in applied:
        state = "applied" if m.applied else "already there"
        out.print(f"{m.version:04d}_{m.name}: {state}")
    for change in retention:
        out.print(f"retention of {change}")


@app.command(
    rich_help_panel="Run the pipeline",
    env=(*STORE, *KAFKA[1:3], "gateway_*", "bootstrap_admin_key", "sql_max_*"),
)
def gateway() -> None:
    """Run the HTTP gateway alone, against the configured broker and store."""
    from prometheus_client import CollectorRegistry

    from thumbline.keys import provision_bootstrap_key
    from thumbline.metrics import Metrics
    from thumbline.server.gateway import GatewayProcess
    from thumbline.server.runtime import Runtime
    from thumbline.store import migrate_store, open_client

    settings = cli_settings()
    # Only this data dir's: the gateway also opens this configuration's store.
    bootstrap = find_bootstrap(settings, anywhere=False)

    async def run() -> None:
        client = await asyncio.to_thread(open_client, settings)
        try:
            await asyncio.to_thread(migrate_store, client, settings)
            await asyncio.to_thread(provision_bootstrap_key, client, settings)
        finally:
            client.close()
        process = await GatewayProcess(settings, bootstrap, Metrics(CollectorRegistry())).start()
        out.print(f"web         {process.url}/  (inbox, trace, rates, alerts)")
        out.print(f"gateway     {process.url}/v1/feedback  (Kafka {bootstrap}); Ctrl-C stops.")
        try:
            await Runtime(settings).serve_until_signalled()
        finally:
            await process.stop()

    asyncio.run(run())


# loadgen ----------------------------------------------------------------------


def _parse_spike(text: str | None, *, option: str = "--spike", base: Any = None) -> Any:
    """A Spike from ``start=30,end=90,bad=0.6,model=...``; keys left out come from ``base``
    (without one, start and end are required)."""
    from thumbline.producers.loadgen import Spike

    if not text:
        return base
    fields: dict[str, Any] = asdict(base) if base is not None else {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key in ("start", "end", "bad"):
            try:
                fields["bad_share" if key == "bad" else key] = float(value)
            except ValueError:
                fail(f"{option} {key} must be a number, got {value!r}", 2)
        elif key in ("project", "model", "capability"):
            fields[key] = value.strip() or None
        else:
            fail(
                f"{option} takes start=, end=, bad=, project=, model=, capability= (got {key!r})",
                2,
            )
    if "start" not in fields or "end" not in fields:
        fail(f"{option} needs start= and end= (seconds into the run)", 2)
    if not 0 <= fields["start"] < fields["end"]:
        fail(f"{option}: start must be at least 0 and before end", 2)
    if not 0 <= fields.get("bad_share", 0.6) <= 1:
        fail(f"{option}: bad is a share, from 0 to 1", 2)
    return Spike(**fields)


@app.command(rich_help_panel="Run the pipeline", env=KAFKA)
def loadgen(
    rate: Annotated[float, typer.Option(help="Feedback events per second.")] = 100.0,
    duration: Annotated[float | None, typer.Option(help="Seconds; 0 runs until Ctrl-C.")] = 10.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many feedback events.")] = None,
    projects: Annotated[int, typer.Option(help="How many projects the events spread over.")] = 3,
    models: Annotated[int, typer.Option(help="How many models the traces spread over.")] = 4,
    capabilities: Annotated[
        int, typer.Option(help="How many capabilities the traces spread over.")
    ] = 3,
    users: Annotated[int, typer.Option(help="How many distinct users give feedback.")] = 1000,
    bad: Annotated[float, typer.Option(help="Share of bad feedback.")] = 0.1,
    early: Annotated[float, typer.Option(help="Share of feedback sent before its trace.")] = 0.1,
    orphans: Annotated[
        float, typer.Option(help="Share of feedback whose trace never comes.")
    ] = 0.0,
    spike: Annotated[
        str | None,
        typer.Option(help="e.g. start=30,end=90,bad=0.6,project=project-0,model=model-1"),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the random choices: the same seed, the same events.")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Publish realistic traces and feedback, and report exactly what was sent."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from thumbline.producers import FeedbackProducer
    from thumbline.producers.loadgen import LoadSpec, run_load

    settings = cli_settings()
    spec = LoadSpec(
        rate=rate, duration=duration or None, count=count, projects=projects, models=models,
        capabilities=capabilities, users=users, bad_share=bad, early_share=early,
        orphan_share=orphans, spike=_parse_spike(spike), seed=seed,
    )  # fmt: skip
    total = count or (rate * duration if duration else None)

    async def run() -> Any:
        async with FeedbackProducer(
            bootstrap_servers=find_bootstrap(settings),
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
        f"trace, {report.orphans:,} without one; labels: {_counts(report.labels)}"
    )
    if spec.spike:
        out.print(
            f"spike {report.spike_from} .. {report.spike_to}: "
            f"{report.spike_bad}/{report.spike_total} bad"
        )


def _counts(counts: dict[str, int]) -> str:
    """``bad 120, good 8000, neutral 80``: by name (``(none)`` for an empty one); no thousands
    separators, which would read as more items."""
    return ", ".join(f"{name or '(none)'} {n}" for name, n in sorted(counts.items())) or "none"
