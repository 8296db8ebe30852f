"""Child processes of ``thumbline up`` that must not outlive it: ports and parent-death signals.

The embedded broker and its storage run as children that the kernel kills
when the thread that started them exits (``PR_SET_PDEATHSIG``), so even a
``kill -9`` of thumbline leaves none behind. They listen on loopback only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1

#: The one address the embedded broker and its storage listen on.
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a listener could bind ``host:port`` now.

    ``SO_REUSEADDR`` as Go and Rust servers set it: a port whose old
    connections linger in TIME_WAIT counts as free, one with a listener does not.
    """
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str], log: IO[bytes] | None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` as a child that the kernel kills when the calling thread exits.

    Call it from a thread that lives as long as the child should (the main
    thread): a pool thread may exit early and take the child with it. The child
    gets its own process group, so a Ctrl-C in the terminal (or ``timeout``'s
    signal to the group) reaches thumbline alone, which stops the stream before
    the broker it flushes to.
    """
    return subprocess.Popen(  # noqa: S603 (binaries of our dependencies, no shell)
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # runs before exec; keep it to one prctl call
        env=dict(env),
        cwd=cwd,
        process_group=0,
    )


def terminate(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def inherited_env(*, drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without the variables that start with ``drop_prefixes``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
