"""What the benchmarks share."""

from __future__ import annotations

import subprocess


def git_commit() -> str:
    """The short commit the benchmark ran at, for BENCHMARKS.md."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (git from PATH, a dev tool)
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
