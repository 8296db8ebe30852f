"""``thumbline worker``: the stream alone, one of many in a consumer group."""

from __future__ import annotations

import asyncio

from thumbline.cli.common import KAFKA, STORE, app, cli_settings, find_bootstrap, out


@app.command(
    rich_help_panel="Run the pipeline",
    env=(*STORE, *KAFKA[1:3], "partitions", "metrics_*", "stream_batch_*", "rate_*", "alert_*"),
)
def worker() -> None:
    """Run the stream (re-key, join, rates and alerts) as one worker of many.

    Start any number, on any machines, against the same Kafka and ClickHouse:
    they share the partitions (at most THUMBLINE_PARTITIONS workers do work)
    and take over each other's when one stops or dies. Run `thumbline migrate`
    once first. On one machine, workers can share the embedded store of a
    running `thumbline up` (same THUMBLINE_DATA_DIR).
    """
    from thumbline.server.worker import run_worker

    settings = cli_settings()
    bootstrap = find_bootstrap(settings, anywhere=False)

    def started(metrics: str | None) -> None:
        where = f"; metrics {metrics}" if metrics else ""
        out.print(f"worker running (Kafka {bootstrap}{where}); Ctrl-C stops.", soft_wrap=True)

    asyncio.run(run_worker(settings, bootstrap, started))
