"""A worker starts only on a store that is migrated: workers never migrate, many start at once."""

from __future__ import annotations

import pytest

from thumbline.errors import ConfigError
from thumbline.schemas import migrations
from thumbline.server import worker
from thumbline.settings import load_settings


class Store:
    def __init__(self, version: int | None) -> None:
        self.version = version
        self.closed = False

    def query(self, sql: str):
        assert "schema_migrations" in sql
        return type("Result", (), {"result_rows": [(self.version,)]})()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def settings(monkeypatch, tmp_path):
    monkeypatch.setenv("THUMBLINE_DATA_DIR", str(tmp_path))
    return load_settings(clickhouse_url="http://u:p@clickhouse:8123")


def test_a_store_behind_this_versions_migrations_is_refused_with_the_command_to_run(
    settings, monkeypatch
):
    store = Store(version=3)
    monkeypatch.setattr(worker, "open_client", lambda s, readonly: store)
    with pytest.raises(ConfigError, match="run `thumbline migrate` once"):
        worker.check_migrated(settings)
    assert store.closed


def test_a_migrated_store_lets_the_worker_start(settings, monkeypatch):
    newest = max(m.version for m in migrations.load())
    monkeypatch.setattr(worker, "open_client", lambda s, readonly: Store(version=newest))
    worker.check_migrated(settings)  # no error


def test_a_server_store_is_shared_as_configured(settings):
    assert worker.shared_store(settings) is settings
