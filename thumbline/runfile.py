"""The run file: how other processes find a running ``thumbline up``.

``thumbline up`` writes ``<data_dir>/run.json`` (mode 0600: it holds the SQL
endpoint's token) once everything listens, and removes it when it stops. A run
file whose process is gone (``kill -9``) is treated as absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RunInfo:
    pid: int
    bootstrap: str
    embedded_broker: bool
    broker_pid: int | None
    store: str  # display form, no secrets
    sql_url: str | None
    sql_token: str | None
    started_at: str
    metrics_url: str | None = None
    gateway_url: str | None = None
    broker_storage: str | None = None  # "durable" or "memory" for the embedded broker
    storage_pid: int | None = None  # SeaweedFS, under the durable embedded broker


def write(path: Path, info: RunInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(info), f, indent=2)
    os.replace(tmp, path)


def read(path: Path) -> RunInfo | None:
    """The run file of a live ``thumbline up``, or None."""
    try:
        info = RunInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


def remove(path: Path, pid: int) -> None:
    """Remove the run file if it is still ours."""
    current = None
    try:
        current = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError):
        return
    if current == pid:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
