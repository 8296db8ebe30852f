"""The ``thumbline`` command line: the one place that builds settings and prints.

One module per command group: :mod:`.pipeline` (up, gateway, migrate, loadgen),
:mod:`.read` (sql, inbox, rates, alerts, trace), :mod:`.agreement`, :mod:`.send` (send feedback,
send trace), :mod:`.admin` (topics, keys, schemas), :mod:`.scores` (score configs);
:mod:`.common` holds the app,
its consoles and settings, :mod:`.commands` puts them together.

``pip install thumbline`` is the SDK alone; the command needs the server's
dependencies (``pip install 'thumbline[server]'``), and says so.
"""

from __future__ import annotations

import sys

#: the server's dependencies the command imports first (pyproject.toml's ``server`` extra)
SERVER_ONLY = frozenset({"typer", "rich", "click", "pydantic_settings"})


def main() -> None:
    """Entrypoint of the ``thumbline`` command."""
    try:
        from thumbline.cli.commands import run
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_ONLY:
            raise
        print(
            f"error: the thumbline command runs the server, which needs more than the SDK "
            f"({exc.name} is missing): pip install 'thumbline[server]'",
            file=sys.stderr,
        )
        sys.exit(2)
    run()


if __name__ == "__main__":
    main()
