"""The run file: how the CLI finds a running `thumbline up`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

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


# the per-user records and the lock ---------------------------------------------------


def test_the_user_dir_is_the_runtime_dir_else_the_state_dir_else_the_home_state(tmp_path):
    assert runfile.user_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/thumbline")
    assert runfile.user_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/thumbline")
    relative = {"XDG_RUNTIME_DIR": "rel", "XDG_STATE_HOME": "rel"}  # ignored, as XDG says
    assert runfile.user_dir(relative) == Path.home() / ".local/state/thumbline"


def test_a_registered_up_is_found_with_its_data_dir_in_a_private_record(tmp_path):
    environ = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    data_dir = tmp_path / "data"
    runfile.write(data_dir / "run.json", info(os.getpid()))
    record = runfile.register(data_dir, info(os.getpid()), environ=environ)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    assert runfile.running(environ=environ) == [runfile.Running(data_dir, info(os.getpid()))]
    assert "tok" not in str(runfile.running(environ=environ)[0])
    runfile.unregister(os.getpid(), environ=environ)
    assert runfile.running(environ=environ) == []


def test_a_record_whose_data_dir_names_another_process_is_stale_and_removed(tmp_path):
    environ = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    data_dir = tmp_path / "data"
    runfile.write(data_dir / "run.json", info(os.getppid()))  # the data dir moved on
    record = runfile.register(data_dir, info(os.getpid()), environ=environ)
    assert runfile.running(environ=environ) == []
    assert not record.exists()


def test_looking_for_records_creates_nothing(tmp_path):
    environ = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    assert runfile.running(environ=environ) == []
    assert list(tmp_path.iterdir()) == []


def test_the_lock_names_its_holder_until_it_is_released(tmp_path):
    assert runfile.holder(tmp_path) is None  # no lock file: nothing created
    assert list(tmp_path.iterdir()) == []
    fd = runfile.hold(tmp_path)
    assert fd is not None
    assert runfile.holder(tmp_path) == os.getpid()
    assert runfile.starting(tmp_path) == os.getpid()  # no run file yet
    runfile.write(tmp_path / "run.json", info(os.getpid()))
    assert runfile.starting(tmp_path) is None  # it serves
    assert runfile.hold(tmp_path, patience=0) is None  # a second up on the same data dir
    os.close(fd)
    assert runfile.holder(tmp_path) is None
