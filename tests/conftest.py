"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest


def unique(name: str) -> str:
    """A name no other test or run uses: ``t_<name>_<8 hex>``."""
    return f"t_{name}_{uuid.uuid4().hex[:8]}"


def system_tool(*names: str, package: str) -> str:
    """The path of a system program a test needs (the first of ``names`` found).

    Missing, the test is skipped on a developer's machine, and fails in CI
    (``CI`` is set): there ``.ci/run`` installs ``package``, so a missing tool
    is a broken CI, not a reason to test less.
    """
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{names[0]} is not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: .ci/run should have installed it")
    pytest.skip(message)
