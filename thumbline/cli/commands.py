"""Every command group registered on the app, and the errors turned into messages."""

from __future__ import annotations

import sys

from thumbline.cli.common import app, err
from thumbline.errors import ConfigError
from thumbline.files import private_umask
from thumbline.schemas import InvalidEvent, ThumblineError

# The groups register their commands; `thumbline --help` lists them in this order.
# isort: off
from thumbline.cli import pipeline, worker, inbox, read, agreement, send, admin, scores  # noqa: E402, F401
# isort: on


def run() -> None:
    """Run the command line: thumbline's errors become a message and an exit code."""
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
