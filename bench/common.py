"""What the benchmarks share."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from thumbline.broker import EmbeddedBroker
from thumbline.seaweed import SeaweedS3

#: The embedded broker's storages, as ``THUMBLINE_BROKER_STORAGE`` names them.
STORAGES = ("memory", "durable")


def git_commit() -> str:
    """The short commit the benchmark ran at, for BENCHMARKS.md."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (git from PATH, a dev tool)
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip


@contextlib.contextmanager
def embedded_broker(storage: str, folder: Path) -> Iterator[EmbeddedBroker]:
    """The embedded broker as ``thumbline up`` starts it: in memory, or durable in ``folder``."""
    seaweed = None
    if storage == "durable":
        seaweed = SeaweedS3(folder / "broker", log_path=folder / "seaweedfs.log")
    with EmbeddedBroker(log_path=folder / "broker.log", storage=seaweed) as broker:
        yield broker
