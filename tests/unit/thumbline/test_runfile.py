"""The run file: how the CLI finds a running `thumbline up`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from thumbline import runfile


def info(pid: int) -> runfile.RunInfo:
    return runfile.RunInfo(
        pid=pid,
        bootstrap="127.0.0.1:1",
        embedded_broker=True,
        broker_pid=None,
        store="chdb:///x",
        sql_url="http://127.0.0.1:2",
        sql_token="tok",
        started_at="now",
    )


def test_a_live_owner_is_found_and_the_file_is_private(tmp_path):
    path = tmp_path / "run.json"
    runfile.write(path, info(os.getpid()))
    assert runfile.read(path) == info(os.getpid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_dead_owner_counts_as_absent(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / "run.json"
    runfile.write(path, info(int(proc.stdout)))
    assert runfile.read(path) is None


def test_missing_or_corrupt_files_count_as_absent(tmp_path):
    assert runfile.read(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert runfile.read(tmp_path / "bad.json") is None


def test_remove_only_removes_our_own_file(tmp_path):
    path = tmp_path / "run.json"
    runfile.write(path, info(os.getpid()))
    runfile.remove(path, os.getpid() + 1)
    assert path.exists()
    runfile.remove(path, os.getpid())
    assert not path.exists()
