"""``thumbline store url``: the URL a second process on this machine sets as
``THUMBLINE_CLICKHOUSE_URL`` to reach the running ``thumbline up``'s store."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from thumbline import runfile
from thumbline.cli.commands import app


def announce(data_dir: Path) -> None:
    """A live ``thumbline up`` (this process) announced in ``data_dir``'s run file."""
    runfile.write(
        data_dir / "run.json",
        runfile.RunInfo(
            pid=os.getpid(), bootstrap="-", embedded_broker=True, broker_pid=None,
            store="chdb:///x", sql_url="http://127.0.0.1:41234", sql_token="t",
            started_at="now", store_writer_password="w/p@ss",
            store_reader_password="r-pass",
        ),
    )  # fmt: skip


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["store", "url", *args], env={"THUMBLINE_DATA_DIR": str(data_dir)}
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_writer_url_carries_its_password_quoted(tmp_path):
    announce(tmp_path)
    code, out, _ = run(tmp_path)
    assert code == 0
    assert out.strip() == "http://thumbline:w%2Fp%40ss@127.0.0.1:41234"


def test_the_reader_url_is_the_sandbox_users(tmp_path):
    announce(tmp_path)
    code, out, _ = run(tmp_path, "--reader")
    assert code == 0
    assert out.strip() == "http://thumbline_reader:r-pass@127.0.0.1:41234"


def test_without_a_running_thumbline_up_it_says_what_to_start(tmp_path):
    code, out, err = run(tmp_path)
    assert code == 1
    assert out == ""
    assert "thumbline up" in err
