"""The durable embedded broker: a 202 survives `kill -9` of everything `thumbline up` runs.

`thumbline up` runs with its default broker (Tansu on a local SeaweedFS under
the data dir). Events go in over HTTP; the stream is made to hold its rows
(the sink waits 60 s), so at the crash the events are only in Kafka. After
`kill -9` of thumbline up, Tansu and SeaweedFS at once, a new `thumbline up`
on the same data dir must store every acknowledged event exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import aiohttp

from tests.conftest import unique
from tests.integration.conftest import Up, gone, run, sql_rows, start_up, stop
from tests.integration.test_files import readable_by_others
from thumbline import runfile

EVENTS = 2000  # traces, and as many feedback events: 4,000 events over HTTP


def pairs(run_id: str, n: int) -> tuple[list[dict], list[dict]]:
    traces = [{"trace_id": f"{run_id}-t{i}", "model": "m1", "user_id": f"u{i % 50}"}
              for i in range(n)]  # fmt: skip
    feedback = [
        {"event_id": f"{run_id}-f{i}", "trace_id": f"{run_id}-t{i}", "label": "bad" if i % 3 else
         "good", "comment": f"comment {i}"}
        for i in range(n)
    ]  # fmt: skip
    return traces, feedback


async def post_all(gateway: str, path: str, events: list[dict], *, batch: int = 500) -> int:
    """POST ``events`` in batches; return how many got a 202. A 503 (the broker is away) is
    retried, as a client does; anything else fails the test."""
    accepted = 0
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            for _ in range(60):
                async with http.post(f"{gateway}/v1/{path}", json=chunk) as r:
                    if r.status == 503:
                        await asyncio.sleep(0.5)
                        continue
                    assert r.status == 202, await r.text()
                    accepted += (await r.json())["accepted"]
                    break
            else:
                raise AssertionError(f"the gateway answered 503 for 30 s to {path}")
    return accepted


def counts(thumbline_bin: str, env: dict[str, str], run_id: str) -> dict[str, int]:
    [row] = sql_rows(thumbline_bin, env,
        f"SELECT (SELECT count() FROM thumbline.feedback FINAL WHERE event_id LIKE '{run_id}-%') "
        "AS final, (SELECT count() FROM thumbline.feedback WHERE event_id LIKE "
        f"'{run_id}-%') AS rows, (SELECT uniqExact(event_id) FROM thumbline.feedback WHERE "
        f"event_id LIKE '{run_id}-%') AS ids, (SELECT count() FROM thumbline.feedback FINAL "
        f"WHERE event_id LIKE '{run_id}-%' AND join_status = 'joined') AS joined, (SELECT "
        f"count() FROM thumbline.traces FINAL WHERE trace_id LIKE '{run_id}-%') AS traces",
    )  # fmt: skip
    return {k: int(v) for k, v in row.items()}


async def settle(thumbline_bin: str, env: dict[str, str], run_id: str, want: int) -> dict:
    for _ in range(120):
        got = await asyncio.to_thread(counts, thumbline_bin, env, run_id)
        if got["final"] >= want and got["traces"] >= want:
            return got
        await asyncio.sleep(0.5)
    return got


def processes(up: Up) -> dict[str, int]:
    """Every process this `thumbline up` runs, by name (from its run file)."""
    info = runfile.read(up.data_dir / "run.json")
    assert info is not None and info.broker_pid and info.storage_pid
    return {"thumbline up": info.pid, "tansu": info.broker_pid, "weed": info.storage_pid}


def listening(pid: int) -> list[str]:
    """``address:port`` of every TCP socket ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                ip = (".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                      if table == "tcp" else address)  # fmt: skip
                found.append(f"{ip}:{int(port, 16)}")
    return found


async def test_every_202_survives_kill_9_of_thumbline_its_broker_and_storage(
    thumbline_bin, clean_env, tmp_path
):
    data, run_id = tmp_path / "data", unique("durable")
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(data), "THUMBLINE_PARTITIONS": "4"}
    holding = {**env, "THUMBLINE_SINK_MAX_SECONDS": "60", "THUMBLINE_SINK_MAX_ROWS": "1000000"}
    first = await asyncio.to_thread(start_up, thumbline_bin, holding, data)
    try:
        traces, feedback = pairs(run_id, EVENTS)
        assert await post_all(first.info.gateway_url, "traces", traces) == EVENTS
        assert await post_all(first.info.gateway_url, "feedback", feedback) == EVENTS
        # Acknowledged by Kafka, not yet in ClickHouse: a crash now loses them unless the
        # broker kept them.
        assert counts(thumbline_bin, holding, run_id)["rows"] == 0
        pids = processes(first)
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        assert await all_gone(pids.values())
    finally:
        stop(first)

    second = await asyncio.to_thread(start_up, thumbline_bin, env, data)
    try:
        got = await settle(thumbline_bin, env, run_id, EVENTS)
        # Once each: by FINAL, by distinct ids, and as rows (nothing was stored before the
        # crash, so no re-delivery may leave a second row either).
        assert got == {"final": EVENTS, "rows": EVENTS, "ids": EVENTS, "joined": EVENTS,
                       "traces": EVENTS}  # fmt: skip
        pids = processes(second)
        second.proc.send_signal(signal.SIGTERM)
        _, log = await asyncio.to_thread(second.proc.communicate, timeout=30)
        assert second.proc.returncode == 0
        assert await all_gone(pids.values())
        assert "readable by other users" not in log  # the .vif files of the killed run too
        assert sockets(ports(data)["s3.port"]) == []
    finally:
        stop(second)


def ports(data: Path) -> dict[str, int]:
    return json.loads((data / "broker" / "seaweedfs.json").read_text())["ports"]


def sockets(port: int) -> list[Path]:
    """The Unix sockets SeaweedFS makes in /tmp for one of its ports."""
    return list(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))


async def all_gone(pids) -> bool:
    return all([await asyncio.to_thread(gone, pid) for pid in pids])


async def test_the_durable_broker_is_private_and_comes_back_when_a_process_dies(
    thumbline_bin, clean_env, tmp_path
):
    data, run_id = tmp_path / "data", unique("revive")
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(data), "THUMBLINE_PARTITIONS": "4",
           "THUMBLINE_SINK_MAX_SECONDS": "0.2"}  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, data)
    pids = processes(up)
    try:
        # Every port of Tansu and of SeaweedFS on loopback (SeaweedFS's, each pinned by us).
        tansu, weed = listening(pids["tansu"]), listening(pids["weed"])
        assert tansu == [up.info.bootstrap]
        chosen = ports(data)
        expected = {*chosen.values(), chosen["admin.port"] + 10_000}
        assert sorted(weed) == sorted(f"127.0.0.1:{p}" for p in expected), weed
        # Owner-only files (SeaweedFS chmods each volume's .vif, its size and version, to 0644
        # in its 0700 folder; they are closed when it stops), and the S3 secret in no log.
        secret = json.loads((data / "broker" / "seaweedfs.json").read_text())["secret_key"]
        assert all(".vif 0o644" in f for f in readable_by_others(data)), readable_by_others(data)
        assert stat.S_IMODE((data / "broker" / "s3").stat().st_mode) == 0o700
        for sock in sockets(chosen["s3.port"]):
            assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
        for log in ("broker.log", "seaweedfs.log"):
            assert secret not in (data / log).read_text(errors="replace")

        # SeaweedFS, then Tansu, killed while it runs: each is started again in place, and
        # events sent meanwhile (503 until it is back) are stored.
        for name, batch in (("weed", 0), ("tansu", 1)):
            os.kill(pids[name], signal.SIGKILL)
            traces, feedback = pairs(f"{run_id}-{batch}", 200)
            assert await post_all(up.info.gateway_url, "traces", traces) == 200
            assert await post_all(up.info.gateway_url, "feedback", feedback) == 200
            got = await settle(thumbline_bin, env, f"{run_id}-{batch}", 200)
            assert (got["final"], got["ids"], got["traces"]) == (200, 200, 200)
            now = processes(up)
            assert now[name] != pids[name] and runfile.pid_alive(now[name])
            pids = now
        assert up.proc.poll() is None
        up.proc.send_signal(signal.SIGTERM)
        _, log = await asyncio.to_thread(up.proc.communicate, timeout=30)
        assert up.proc.returncode == 0
        assert log.count("starting it again on the same data") == 2, log
        assert secret not in log
        assert await all_gone(pids.values())
        assert readable_by_others(data) == []
    finally:
        stop(up)
        for pid in pids.values():  # the broker's processes since their restarts
            if runfile.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_storage_too_slow_to_start_fails_saying_what_to_do_and_leaves_nothing(
    thumbline_bin, clean_env, tmp_path
):
    data = tmp_path / "data"
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(data),
           "THUMBLINE_BROKER_START_TIMEOUT_SECONDS": "0.05"}  # fmt: skip
    result = run(thumbline_bin, env, "up")
    assert result.returncode == 1
    assert "SeaweedFS, the embedded broker's storage, was not ready in 0.05s" in result.stderr
    assert "THUMBLINE_BROKER_START_TIMEOUT_SECONDS" in result.stderr
    assert "thumbline up --memory" in result.stderr and str(data / "seaweedfs.log") in result.stderr
    assert not (data / "run.json").exists()
    assert sockets(ports(data)["s3.port"]) == []
    left = subprocess.run(["pgrep", "-f", f"weed mini -dir={data}"], capture_output=True)
    assert left.stdout == b""
