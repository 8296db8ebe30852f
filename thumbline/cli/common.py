"""What every command shares: the app and its groups, the consoles, settings, failing."""

from __future__ import annotations

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


def find_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    info = runfile.read(settings.run_file)
    if info is None:
        fail(
            "no Kafka to send to: start `thumbline up` (in this directory, or with the same "
            "THUMBLINE_DATA_DIR), or set THUMBLINE_KAFKA_BOOTSTRAP"
        )
    return info.bootstrap
