"""What every command shares: the app and its groups, the consoles, settings, failing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from thumbline import logs, runfile
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
app.add_typer(send_app, name="send", rich_help_panel="Send events")
app.add_typer(topics_app, name="topics", rich_help_panel="Administer")
keys_app = typer.Typer(help="API keys of the HTTP gateway.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas", rich_help_panel="Administer")
app.add_typer(keys_app, name="keys", rich_help_panel="Administer")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def cli_settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    return settings


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def find_bootstrap(settings: Settings, *, anywhere: bool = True) -> str:
    """THUMBLINE_KAFKA_BOOTSTRAP, else the broker of the ``thumbline up`` found (see
    :func:`locate`; with ``anywhere`` false, only the one of the configured data dir),
    waited for while it starts."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    found = locate(settings) if anywhere else settings
    if found is not None:
        wait_for_start(found)
    info = runfile.read(found.run_file) if found is not None else None
    if info is None:
        fail(
            "no Kafka to send to: start `thumbline up` (in this directory, or with the same "
            "THUMBLINE_DATA_DIR), or set THUMBLINE_KAFKA_BOOTSTRAP"
        )
    return info.bootstrap


def store_settings() -> Settings:
    """The settings of a command on the store (``sql``, ``inbox``, ``keys``...).

    With an embedded store: its data dir as :func:`locate` finds it (the command
    fails saying where to look when there is none), and a ``thumbline up``
    starting on it waited for (:func:`wait_for_start`). Nothing is created.
    """
    settings = cli_settings()
    if not settings.store_is_chdb:
        return settings
    found = locate(settings)
    if found is None:
        fail(
            f"no thumbline here: no store in {settings.data_dir.resolve()}, and no `thumbline "
            "up` runs for this user. Run the command in the directory where you started "
            "`thumbline up`, or set THUMBLINE_DATA_DIR to its data dir"
        )
    wait_for_start(found)
    return found


def locate(settings: Settings) -> Settings | None:
    """The settings with the data dir of the instance to use, or None when there is none.

    THUMBLINE_DATA_DIR or THUMBLINE_CLICKHOUSE_URL when set, else the data dir
    in the current directory when it exists, else the one ``thumbline up`` this
    user runs (:func:`thumbline.runfile.running`). Two or more running: fails,
    naming them and how to choose.
    """
    chosen = {"data_dir", "clickhouse_url"} & settings.model_fields_set
    if chosen or _holds_instance(settings):
        return settings
    live = runfile.running()
    if not live:
        return None
    if len(live) > 1:
        listed = "\n".join(f"  {r}" for r in live)
        fail(
            f"{len(live)} `thumbline up` run for this user:\n{listed}\nchoose one: set "
            "THUMBLINE_DATA_DIR to its data dir, or run the command in the directory that "
            "holds it",
            2,
        )
    return settings.model_copy(update={"data_dir": live[0].data_dir})


def _holds_instance(settings: Settings) -> bool:
    """True when the data dir holds a store or a ``thumbline up`` (an empty one, left by an
    older version's read, does not count)."""
    store = Path(settings.store_url.removeprefix("chdb://"))
    return store.is_dir() or (settings.data_dir / runfile.LOCK_NAME).exists()


def wait_for_start(settings: Settings) -> None:
    """Wait (up to THUMBLINE_START_WAIT_SECONDS) while a ``thumbline up`` starts on the data dir.

    Returns when it serves, or when nobody holds the data dir any more; fails
    saying to try again when it is still starting after the wait.
    """
    pid = runfile.starting(settings.data_dir)
    if pid is None:
        return
    deadline = time.monotonic() + settings.start_wait_seconds
    if settings.start_wait_seconds > 0:
        err.print("waiting for thumbline up to start...", style="dim")
    while pid is not None:
        if time.monotonic() >= deadline:
            fail(f"thumbline up (pid {pid}) is starting, try again in a moment")
        time.sleep(0.1)
        pid = runfile.starting(settings.data_dir)
