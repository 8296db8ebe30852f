"""Session fixtures: the real embedded broker (Tansu) and a real chDB store.

One broker and one chDB path serve the whole session (a process may open only
one chDB path); each test gets its own topics, and the session its own
database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from clickhouse_connect.driver.client import Client

from schemas import Topics
from tests.conftest import unique
from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.settings import Settings, load_settings
from thumbline.store import apply_migrations, open_client

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("store")
    return load_settings(data_dir=data_dir, clickhouse_database=unique("db"))


@pytest.fixture(scope="session")
def store(store_settings: Settings) -> Iterator[Client]:
    """A writer client on the session's chDB path, with the migrations applied."""
    client = open_client(store_settings)
    apply_migrations(client, store_settings.clickhouse_database)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {store_settings.clickhouse_database}")
    client.close()


@pytest.fixture
async def topics(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Topics:
    """Fresh topics for one test, created with their partition counts."""
    name = request.node.name.split("[")[0].removeprefix("test_")[:20]
    registry = Topics.build(f"{unique(name)}.", 4)
    await ensure_topics(broker.bootstrap, registry.all())
    return registry


@pytest.fixture(scope="session")
def thumbline_bin() -> str:
    candidate = Path(sys.executable).parent / "thumbline"
    found = str(candidate) if candidate.exists() else shutil.which("thumbline")
    assert found, "the thumbline console script is not installed: pip install -e '.[test]'"
    return found


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any THUMBLINE_ setting, for CLI subprocesses."""
    return {k: v for k, v in os.environ.items() if not k.startswith("THUMBLINE_")}


async def consume(
    bootstrap: str, topic_names: list[str], *, events: int, timeout: float = 20.0
) -> list[tuple[str, int, list[dict]]]:
    """Read messages from the start until ``events`` events arrived or ``timeout`` passed.

    Returns one (topic, partition, decoded events) entry per message.
    """
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[tuple[str, int, list[dict]]] = []
    seen = 0
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while seen < events and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    value = orjson.loads(message.value)
                    decoded = value if isinstance(value, list) else [value]
                    out.append((tp.topic, tp.partition, decoded))
                    seen += len(decoded)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def consume_events():
    return consume
