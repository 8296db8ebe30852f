"""What every command shares: the app and its groups, the consoles, settings, failing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from thumbline import logs, runfile
from thumbline.settings import ENV_PREFIX, Settings, load_settings

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# Help pages ---------------------------------------------------------------------
#
# typer renders each option's Python type next to it (<bool>, <str>); a flag takes
# no value, so its tag only misleads. An empty metavar is typer's way to show none.


def _untagged_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untagged_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untagged_flags(super().get_params(ctx))


def env_epilog(fields: Sequence[str]) -> str:
    """The help page's section on the ``THUMBLINE_*`` variables a command reads.

    ``fields`` are :class:`Settings` field names, or prefixes ending in ``*``
    (``"kafka_*"``: every Kafka setting), or ``"*"`` for every setting, grouped
    by their first word. Each name is checked against Settings here, so a help
    page never names a variable that does not exist.

    Raises:
        ValueError: a name or prefix matches no setting.
    """
    known = Settings.model_fields
    lines: list[str] = []

    def group(prefix: str) -> None:
        names = [n for n in known if n.startswith(prefix)]
        if not names:
            raise ValueError(f"no setting starts with {prefix!r}")
        if len(names) == 1:
            one(names[0])
            return
        rest = ", ".join(n.removeprefix(prefix).upper() for n in names)
        lines.append(f"  {ENV_PREFIX}{prefix.upper()}*  {rest}")

    def one(name: str) -> None:
        if name not in known:
            raise ValueError(f"{name!r} is not a setting")
        info = known[name]
        about = (info.description or "").split(". ")[0].rstrip(".")
        default = info.get_default(call_default_factory=True)
        shown = "" if default in (None, "") else f" (default {default})"
        lines.append(f"  {ENV_PREFIX}{name.upper()}  {about}{shown}".rstrip())

    for field in fields:
        if field == "*":
            groups: dict[str, list[str]] = {}
            for name in known:
                groups.setdefault(name.split("_")[0], []).append(name)
            for first, names in groups.items():
                group(f"{first}_") if len(names) > 1 else one(names[0])
        elif field.endswith("*"):
            group(field[:-1])
        else:
            one(field)
    return escape("Environment (settings are read from these variables):\n" + "\n".join(lines))


#: The settings groups most commands read.
STORE = ("data_dir", "clickhouse_*", "log_*")
SQL = (*STORE, "sql_max_*")
KAFKA = ("data_dir", "kafka_*", "topic_prefix", "log_*")


class App(typer.Typer):
    """A typer app whose help pages tag no flag with a type, and whose commands name the
    ``THUMBLINE_*`` variables they read (``env=``: see :func:`env_epilog`)."""

    def __init__(self, *, help: str) -> None:  # noqa: A002 (typer's name)
        super().__init__(
            help=help, cls=_Group, no_args_is_help=True, add_completion=False,
            pretty_exceptions_enable=False,
        )  # fmt: skip

    def command(  # type: ignore[override]
        self, name: str | None = None, *, env: Sequence[str] = (), **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        epilog = env_epilog(env) if env else None
        return super().command(name, cls=_Command, epilog=epilog, **kwargs)


def package_version() -> str:
    try:
        return version("thumbline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


app = App(
    help="Thumbline: end-user feedback on LLM answers, joined with its traces, in ClickHouse."
)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"thumbline {package_version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print thumbline's version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:  # fmt: skip
    """Thumbline: end-user feedback on LLM answers, joined with its traces, in ClickHouse."""


send_app = App(help="Publish one event to Kafka (validated first).")
topics_app = App(help="The Kafka topics thumbline uses.")
schemas_app = App(help="The event contracts.")
keys_app = App(help="API keys of the HTTP gateway.")
store_app = App(help="The embedded store's ClickHouse endpoint.")
app.add_typer(send_app, name="send", rich_help_panel="Send events")
app.add_typer(topics_app, name="topics", rich_help_panel="Administer")
app.add_typer(schemas_app, name="schemas", rich_help_panel="Administer")
app.add_typer(keys_app, name="keys", rich_help_panel="Administer")
app.add_typer(store_app, name="store", rich_help_panel="Administer")


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
