"""Running thumbline: ``up``, ``gateway``, ``migrate`` and ``loadgen``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
import typer

from thumbline.cli.common import KAFKA, STORE, app, cli_settings, err, fail, find_bootstrap, out
from thumbline.settings import Settings


@app.command(rich_help_panel="Run the pipeline", env=("*",))
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
    from thumbline.server.runtime import Runtime

    settings = cli_settings(**({"broker_storage": "memory"} if memory else {}))

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
    from thumbline.producers import FeedbackProducer
    from thumbline.producers.loadgen import LoadSpec, run_load

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


@app.command(rich_help_panel="Run the pipeline", env=STORE)
def migrate() -> None:
    """Apply the ClickHouse migrations (`thumbline up` does this too)."""
    from thumbline.store import apply_migrations, open_client

    settings = cli_settings()
    client = open_client(settings)
    try:
        applied = apply_migrations(client, settings.clickhouse_database)
    finally:
        client.close()
    for m in applied:
        state = "applied" if m.applied else "already there"
        out.print(f"{m.version:04d}_{m.name}: {state}")


@app.command(
    rich_help_panel="Run the pipeline", env=(*STORE, *KAFKA[1:3], "gateway_*", "sql_max_*")
)
def gateway() -> None:
    """Run the HTTP gateway alone, against the configured broker and store."""
    from prometheus_client import CollectorRegistry

    from thumbline.metrics import Metrics
    from thumbline.server.gateway import GatewayProcess
    from thumbline.server.runtime import Runtime
    from thumbline.store import apply_migrations, open_client

    settings = cli_settings()
    bootstrap = find_bootstrap(settings)

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


# loadgen ----------------------------------------------------------------------


def _parse_spike(text: str | None) -> Any:
    from thumbline.producers.loadgen import Spike

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
                fail(f"--spike {key} must be a number, got {value!r}", 2)
        elif key in ("project", "model", "capability"):
            fields[key] = value.strip()
        else:
            fail(
                f"--spike takes start=, end=, bad=, project=, model=, capability= (got {key!r})", 2
            )
    if "start" not in fields or "end" not in fields:
        fail("--spike needs start= and end= (seconds into the run)", 2)
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
        f"trace, {report.orphans:,} without one; labels {dict(report.labels)}"
    )
    if spec.spike:
        out.print(
            f"spike {report.spike_from} .. {report.spike_to}: "
            f"{report.spike_bad}/{report.spike_total} bad"
        )
