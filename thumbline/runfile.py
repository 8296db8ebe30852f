"""The run files: how other processes find a running ``thumbline up``.

``thumbline up`` writes ``<data_dir>/run.json`` (mode 0600: it holds the SQL
endpoint's token and its users' passwords) once everything listens, and removes it when it stops. It
also records itself for its user, in :func:`user_dir` (a 0700 folder): one
``<pid>.json`` holding its data dir and what ``run.json`` holds, so a command
run from any directory finds it. A record whose process is gone (``kill -9``),
or whose data dir no longer names that process, is treated as absent and removed.

From its first moment to its last, ``thumbline up`` holds an exclusive lock on
``<data_dir>/up.lock``: a command that finds the lock held and no ``run.json``
knows that ``thumbline up`` is starting (or stopping), and neither opens the
store itself nor mistakes it for a free one. The kernel drops the lock with the
process, so a killed ``thumbline up`` leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

#: The lock ``thumbline up`` holds in its data dir for its whole life.
LOCK_NAME = "up.lock"


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
    # the store endpoint's users (ClickHouse's HTTP interface at sql_url): see thumbline.chhttp
    store_writer_password: str | None = None
    store_reader_password: str | None = None


@dataclass(frozen=True, slots=True)
class Running:
    """A live ``thumbline up`` of this user, from its per-user record."""

    data_dir: Path
    info: RunInfo

    def __str__(self) -> str:  # never the token nor the passwords
        return f"pid {self.info.pid} (data dir {self.data_dir}, started {self.info.started_at})"


def write(path: Path, info: RunInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, asdict(info))


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


# the per-user records ------------------------------------------------------------


def user_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where this user's running ``thumbline up`` record themselves.

    ``$XDG_RUNTIME_DIR/thumbline`` (a per-user tmpfs, emptied at logout), else
    ``$XDG_STATE_HOME/thumbline``, else ``~/.local/state/thumbline``. These are
    the platform's variables, not thumbline settings: they are read here.
    """
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_absolute():
        return Path(runtime) / "thumbline"
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local/state"
    return base / "thumbline"


def register(data_dir: Path, info: RunInfo, *, environ: Mapping[str, str] = os.environ) -> Path:
    """Record ``info`` for this user (a 0600 file in a 0700 folder); returns the record's path.

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder = user_dir(environ)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # made by an older version, or with a wider umask
    path = folder / f"{info.pid}.json"
    _write_private(path, {"data_dir": str(data_dir.resolve()), **asdict(info)})
    return path


def unregister(pid: int, *, environ: Mapping[str, str] = os.environ) -> None:
    (user_dir(environ) / f"{pid}.json").unlink(missing_ok=True)


def running(*, environ: Mapping[str, str] = os.environ) -> list[Running]:
    """This user's live ``thumbline up``, oldest first; stale records are removed.

    A record is live while its process runs and its data dir's ``run.json``
    names that process (a pid taken over by another program does not).
    Nothing is created: with no folder, the answer is an empty list.
    """
    folder = user_dir(environ)
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    names = {f.name for f in fields(RunInfo)}
    found = []
    for path in paths:
        try:
            held = json.loads(path.read_text())
            data_dir = Path(held.pop("data_dir"))
            info = RunInfo(**{k: v for k, v in held.items() if k in names})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # being written, or not ours: left alone
        current = read(data_dir / "run.json")
        if current is None or current.pid != info.pid:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(Running(data_dir, current))
    return sorted(found, key=lambda r: r.info.started_at)


# the lock of a starting thumbline up ------------------------------------------------------


def hold(data_dir: Path, *, patience: float = 2.0) -> int | None:
    """Take ``thumbline up``'s lock on ``data_dir`` and write our pid in it.

    Returns the lock's file descriptor (close it to release the lock), or None
    when another process holds it. A command checking the lock holds it shared
    for an instant: that is waited out for ``patience`` seconds.
    """
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def holder(data_dir: Path) -> int | None:
    """The pid of the ``thumbline up`` holding ``data_dir``, or None; creates nothing.

    0 when the lock is held and its pid not written yet.
    """
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0) or b"0")
            except ValueError:
                return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def starting(data_dir: Path) -> int | None:
    """The pid of a ``thumbline up`` that holds ``data_dir`` and has not written its run
    file (it is starting, or stopping), else None."""
    pid = holder(data_dir)
    if pid is None or read(data_dir / "run.json") is not None:
        return None
    return pid


def _write_private(path: Path, content: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)


def endpoint_url(info: RunInfo, *, reader: bool = False) -> str | None:
    """The ClickHouse HTTP URL of a running ``thumbline up``'s embedded store, its password
    in it (for THUMBLINE_CLICKHOUSE_URL, or a tool with ``reader``); None without one."""
    from urllib.parse import quote, urlsplit

    from thumbline.chhttp import READER, WRITER

    password = info.store_reader_password if reader else info.store_writer_password
    if not info.sql_url or password is None:
        return None
    user = READER if reader else WRITER
    return f"http://{user}:{quote(password, safe='')}@{urlsplit(info.sql_url).netloc}"
