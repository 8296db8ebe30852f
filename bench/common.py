"""What the benchmarks share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

from thumbline.broker import EmbeddedBroker, free_port
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


async def wait_ready(base: str, seconds: float) -> None:
    """Until the gateway at ``base`` answers ``/readyz`` with 200; SystemExit after
    ``seconds``."""
    async with aiohttp.ClientSession() as http:
        for _ in range(int(seconds * 10)):
            try:
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the gateway at {base} was not ready within {seconds:g} s: see its log")


@contextlib.asynccontextmanager
async def running_gateway(
    bootstrap: str, data_dir: Path, *, project: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, str]]:
    """``thumbline gateway`` on a fresh store in ``data_dir``: (its base URL, an ingest key).

    Migrates the store, creates an ingest key bound to ``project``, starts the
    gateway, waits until it is ready and stops it on the way out. ``env`` adds
    settings (a topic prefix, a key cache); any ``THUMBLINE_*`` of the caller's
    environment is left out.
    """
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("THUMBLINE_")},
        "THUMBLINE_DATA_DIR": str(data_dir), "THUMBLINE_KAFKA_BOOTSTRAP": bootstrap,
        "THUMBLINE_GATEWAY_PORT": str(free_port()), **(env or {}),
    }  # fmt: skip
    thumbline = str(Path(sys.executable).parent / "thumbline")
    # a benchmark's setup: blocking the loop here measures nothing
    subprocess.run([thumbline, "migrate"], env=full, check=True, capture_output=True)  # noqa: ASYNC221, S603
    key = subprocess.run(  # noqa: ASYNC221, S603
        [thumbline, "keys", "create", "--scope", "ingest", "--project", project],
        env=full, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    proc = subprocess.Popen([thumbline, "gateway"], env=full, stdout=subprocess.DEVNULL)  # noqa: ASYNC220, S603
    try:
        base = f"http://127.0.0.1:{full['THUMBLINE_GATEWAY_PORT']}"
        await wait_ready(base, 30)
        yield base, key
    finally:
        proc.terminate()
        proc.wait(30)  # noqa: ASYNC221
