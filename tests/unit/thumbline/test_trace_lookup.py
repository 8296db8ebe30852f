"""`send feedback`'s question to the store, broker-free: is the trace known? Never a failure."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from thumbline import runfile, sqlclient
from thumbline.errors import StoreError
from thumbline.settings import load_settings


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(data_dir=tmp_path)


def served(settings) -> None:
    """A run file as a live `thumbline up` that serves SQL writes it (this process's pid)."""
    runfile.write(settings.run_file, runfile.RunInfo(
        pid=os.getpid(), bootstrap="127.0.0.1:1", embedded_broker=False, broker_pid=None,
        store="chdb:///x", sql_url="http://127.0.0.1:1", sql_token="t", started_at="now",
    ))  # fmt: skip


def answering(n: int, asked: list[str] | None = None):
    def run_sql(settings, sql, *, fmt="JSONCompact", write=False, open_path=True):
        assert not open_path  # never opens a chDB path for a note
        if asked is not None:
            asked.append(sql)
        return json.dumps({"meta": [{"name": "n"}], "data": [[str(n)]]}).encode()

    return run_sql


def test_the_trace_is_looked_up_by_project_and_id(settings, monkeypatch):
    served(settings)
    asked: list[str] = []
    monkeypatch.setattr(sqlclient, "run_sql", answering(0, asked))
    assert sqlclient.trace_stored(settings, "shop", "t-1'", timeout=2) is False
    monkeypatch.setattr(sqlclient, "run_sql", answering(2))
    assert sqlclient.trace_stored(settings, "shop", "t-1", timeout=2) is True
    assert "project = 'shop'" in asked[0] and "trace_id = 't-1\\''" in asked[0]


def test_a_chdb_store_nobody_serves_is_not_opened_for_a_lookup(settings, monkeypatch):
    monkeypatch.setattr(sqlclient, "open_sandbox_client", lambda _: pytest.fail("opened"))
    assert sqlclient.trace_stored(settings, "shop", "t-1", timeout=2) is None
    with pytest.raises(StoreError, match="thumbline up"):
        sqlclient.run_sql(settings, "SELECT 1", open_path=False)


def test_a_failing_or_slow_store_gives_no_answer_within_the_timeout(settings, monkeypatch):
    served(settings)

    def failing(*_, **__):
        raise StoreError("Code: 60. Unknown table")

    monkeypatch.setattr(sqlclient, "run_sql", failing)
    assert sqlclient.trace_stored(settings, "shop", "t-1", timeout=2) is None
    release = threading.Event()
    monkeypatch.setattr(sqlclient, "run_sql", lambda *_, **__: release.wait(30))
    began = time.monotonic()
    assert sqlclient.trace_stored(settings, "shop", "t-1", timeout=0.3) is None
    assert time.monotonic() - began < 2
    release.set()
