"""Files only for their owner: no other local user reads a comment or a user id.

`thumbline up` and every CLI command run with umask 0o077, and `thumbline up`
fixes what an older version left readable (dirs 0755, files 0644) at start.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp

from tests.conftest import unique
from tests.integration.conftest import Up, run, sql_rows, start_up, stop
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.faust_app import faust_dir


def readable_by_others(root: Path) -> list[str]:
    """Every file or folder under ``root`` with a group or other bit (symlinks aside:
    their own mode means nothing on Linux, and what they point to is walked or not ours)."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            path = Path(folder, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                found.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(mode))}")
    return sorted(set(found))


def as_a_shell_umask_left_it(data: Path, links_to: tuple[Path, Path]) -> None:
    """Folders 0755, files 0644, an old export, and links out of the data dir."""
    for folder, dirs, files in os.walk(data):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)  # noqa: S103 (the point)
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o644)
    data.chmod(0o755)
    (data / "old-notes.txt").write_text("an old export")
    (data / "old-notes.txt").chmod(0o644)
    (data / "link-out").symlink_to(links_to[0])
    (data / "dir-out").symlink_to(links_to[1], target_is_directory=True)


def stop_and_read_log(up: Up) -> str:
    up.proc.terminate()
    up.proc.wait(30)
    log = up.proc.stderr.read() if up.proc.stderr else ""
    stop(up)
    return log


async def test_a_fresh_store_and_an_old_one_are_readable_only_by_their_owner(
    thumbline_bin, clean_env, tmp_path
):
    data = tmp_path / "data"
    env = {
        **clean_env, "THUMBLINE_DATA_DIR": str(data), "THUMBLINE_PARTITIONS": "4",
        "THUMBLINE_STREAM_WORKERS": "2", "THUMBLINE_JOIN_GRACE_SECONDS": "1",
        "THUMBLINE_SINK_MAX_SECONDS": "0.2",
    }  # fmt: skip
    outside = tmp_path / "outside.txt"
    outside.write_text("not thumbline's")
    outside.chmod(0o644)
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "theirs.txt").write_text("not thumbline's either")
    outside_dir.chmod(0o755)
    umask = os.umask(0o022)  # the usual default: what a user's shell gives thumbline
    up: Up | None = None
    try:
        # A fresh store: the embedded broker's log, a helper's log, tmp/ and the chDB folder.
        up = await asyncio.to_thread(start_up, thumbline_bin, env, data)
        t = unique("files")
        async with aiohttp.ClientSession() as http:
            for path, body in (
                ("traces", {"trace_id": t, "user_id": "u1"}),
                ("feedback", {"trace_id": t, "label": "bad", "comment": "x"}),
            ):
                async with http.post(f"{up.info.gateway_url}/v1/{path}", json=body) as r:
                    assert r.status == 202
        query = f"SELECT comment FROM thumbline.feedback FINAL WHERE trace_id = '{t}'"
        for _ in range(60):  # rows written while it runs make new files
            if rows := await asyncio.to_thread(sql_rows, thumbline_bin, env, query):
                break
            await asyncio.sleep(0.5)
        assert rows == [{"comment": "x"}]
        assert {
            "broker.log",
            "seaweedfs.log",
            "broker",
            "helper-1.log",
            "tmp",
            "chdb",
            "run.json",
        } <= {p.name for p in data.iterdir()}
        # SeaweedFS (the durable broker's storage) chmods each volume's .vif, its size and
        # version, to 0644 in its 0700 folder while it runs; closed again when it stops.
        assert [f for f in readable_by_others(data) if not f.endswith(".vif 0o644")] == []
        assert stat.S_IMODE((data / "broker" / "s3").stat().st_mode) == 0o700
        stop_and_read_log(up)
        assert readable_by_others(data) == []

        # The CLI opens the chDB path itself when nothing runs, and writes to it.
        assert run(thumbline_bin, env, "keys", "create", "--scope", "admin").returncode == 0
        assert run(thumbline_bin, env, "migrate").returncode == 0
        assert readable_by_others(data) == []

        # An old store: what the umask of a shell left. Fixed at start, links not followed.
        as_a_shell_umask_left_it(data, links_to=(outside, outside_dir))
        assert len(readable_by_others(data)) > 10
        up = await asyncio.to_thread(start_up, thumbline_bin, env, data)
        log = stop_and_read_log(up)
        up = None
        assert readable_by_others(data) == []
        assert readable_by_others(outside_dir) == [". 0o755", "theirs.txt 0o644"]
        assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # outside the data dir: untouched
        fixed = [line for line in log.splitlines() if "readable by other users" in line]
        assert len(fixed) == 1, log
    finally:
        os.umask(umask)
        if up is not None:
            stop(up)


async def test_the_stream_keeps_faust_data_under_the_data_dir_not_in_the_working_directory(
    broker, store, store_settings
):
    """Faust makes an ``<app id>-data`` folder in the working directory unless told where:
    one per ``thumbline up`` and per test group, left behind in the repository."""
    prefix = f"{unique('faustdir')}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=4,
    )  # fmt: skip
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    before = set(Path.cwd().glob("*-data"))
    app = StreamApp(settings, broker.bootstrap)
    await app.start()
    try:
        assert faust_dir(settings).is_dir()
        assert faust_dir(settings).parent == settings.data_dir / "faust"
    finally:
        await app.stop()
    assert set(Path.cwd().glob("*-data")) - before == set()
