"""Session fixtures: the real embedded broker (Tansu) and a real chDB store.

One broker and one chDB path serve the whole session (a process may open only
one chDB path); each test gets its own topics, and the session its own
database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from clickhouse_connect.driver.client import Client

from tests.browser import Page, open_page
from tests.conftest import system_tool, unique
from thumbline import runfile
from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import Settings, load_settings
from thumbline.store import apply_migrations, open_client

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def no_folders_left_in_the_working_directory() -> Iterator[None]:
    """Every stream app of the session keeps its Faust folder under its data dir: a new
    ``<app id>-data`` folder in the working directory (the repository) fails the session."""
    before = set(Path.cwd().glob("*-data"))
    yield
    left = sorted(p.name for p in set(Path.cwd().glob("*-data")) - before)
    assert not left, f"tests left Faust folders in {Path.cwd()}: {', '.join(left)}"


# A browser -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """Debian's Chromium: a test that needs it fails in CI without it, and skips elsewhere."""
    return system_tool("chromium", "chromium-browser", package="chromium")


def artifacts_of(test: pytest.Item) -> Path:
    """``build/test-artifacts/<test>/`` in the repository, or ``$THUMBLINE_TEST_ARTIFACTS/<test>/``
    (.ci/run says where they are)."""
    base = Path(os.environ.get("THUMBLINE_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    return base / re.sub(r"[^A-Za-z0-9_.-]+", "_", test.name).strip("_")


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's folder for screenshots (:func:`artifacts_of`), emptied first and kept after
    the run."""
    folder = artifacts_of(request.node)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator:
    """Each phase's report on the test (``item.report_call``): the ``browser`` fixture reads
    whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def browser(
    chromium_bin: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """A headless Chromium tab that reaches loopback only (tests.browser.open_page), stopped
    with the test; if the test failed, its last view is in the test's artifacts as
    ``failed.png``."""
    async with open_page(chromium_bin, tmp_path / "chromium") as page:
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(AssertionError):  # the browser may be what failed
                await page.screenshot(artifacts_of(request.node) / "failed.png", full_page=True)


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


@pytest.fixture(scope="session")
def clean_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment without any THUMBLINE_ setting, for CLI subprocesses.

    Except the metrics and gateway ports: any free ones, so that two `thumbline up` never clash.
    XDG_RUNTIME_DIR is the session's own: `thumbline up` records itself there, never in
    the real user's folders.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBLINE_")}
    runtime_dir = tmp_path_factory.mktemp("xdg-runtime")
    runtime_dir.chmod(0o700)
    return {
        **env, "THUMBLINE_METRICS_PORT": "0", "THUMBLINE_GATEWAY_PORT": "0",
        "XDG_RUNTIME_DIR": str(runtime_dir),
    }  # fmt: skip


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


# `thumbline` as a subprocess ---------------------------------------------------------


@dataclass
class Up:
    proc: subprocess.Popen[str]
    info: runfile.RunInfo
    env: dict[str, str]
    data_dir: Path


def start_up(
    thumbline_bin: str, env: dict[str, str], data_dir: Path, *args: str, log: Path | None = None
) -> Up:
    """Start `thumbline up` (``args``: its options); its stderr goes to ``log`` if given (a
    pipe nobody reads fills up when a long run logs much), else to a pipe."""
    with open(log, "a") if log is not None else contextlib.nullcontext() as sink:
        proc = subprocess.Popen(
            [thumbline_bin, "up", *args], env=env,
            stdout=subprocess.DEVNULL if sink else subprocess.PIPE,
            stderr=sink or subprocess.PIPE, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        info = runfile.read(data_dir / "run.json")
        if info is not None:
            return Up(proc, info, env, data_dir)
        if proc.poll() is not None:
            why = log.read_text() if log is not None else proc.stderr.read()  # type: ignore[union-attr]
            raise AssertionError(f"thumbline up exited {proc.returncode}: {why}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("thumbline up did not write its run file in 90 s")


def stop(up: Up) -> None:
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
        try:
            up.proc.wait(30)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait()
    for stream in (up.proc.stdout, up.proc.stderr):
        if stream:
            stream.close()
    for pid in (up.info.broker_pid, up.info.storage_pid):
        if pid and runfile.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    remove_seaweed_sockets(up.data_dir)


def remove_seaweed_sockets(data_dir: Path) -> None:
    """SeaweedFS names Unix sockets in /tmp for its ports; a killed one leaves them behind."""
    try:
        saved = json.loads((data_dir / "broker" / "seaweedfs.json").read_text())
    except (OSError, ValueError):
        return
    ports = {*saved.get("ports", {}).values(), saved.get("ports", {}).get("admin.port", 0) + 10_000}
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


def run(thumbline_bin: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [thumbline_bin, *args], env=env, capture_output=True, text=True, timeout=120
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Await ``check()`` every half second until it gives something true, at most ``timeout``
    seconds; its last answer (the stream is asynchronous: a test waits for its outcome)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check()
        if got or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.5)


def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` has exited (reaped if it was our child)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            waited = 0
        if waited == pid or not runfile.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def query(store, store_settings) -> Callable[[str], list[tuple]]:
    """Run SQL on the session store; ``{db}`` is its database."""
    db = store_settings.clickhouse_database

    def run(sql: str) -> list[tuple]:
        return store.query(sql.replace("{db}", db)).result_rows

    return run


#: A spike rule for 2-second windows: judged every window against the last 20 s.
SPIKE_RULES = """
[[rule]]
name = "spike"
dimensions = "model"
window = 2
baseline = 20
min_total = 20
min_bad = 5
resolve_after = 2
cooldown = 60
"""


GRACE = "3"


async def worker_env(
    broker, clean_env: dict[str, str], tmp_path, name: str, **extra: str
) -> dict[str, str]:
    """Fresh topics and the settings of a `thumbline up` worker against the session broker."""
    prefix = f"{unique(name)}."
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    return {
        **clean_env,
        "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "THUMBLINE_TOPIC_PREFIX": prefix,
        "THUMBLINE_PARTITIONS": "4",
        "THUMBLINE_JOIN_GRACE_SECONDS": GRACE,
        "THUMBLINE_SINK_MAX_SECONDS": "0.2",
        # its own: every `thumbline up` of the session would read the default otlp_spans
        "THUMBLINE_OTLP_TOPIC": f"{prefix}otlp_spans",
        **extra,
    }


def sql_rows(thumbline_bin: str, env: dict[str, str], query: str) -> list[dict]:
    result = run(thumbline_bin, env, "sql", "-f", "json", query)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def rate_windows(
    thumbline_bin: str, env: dict[str, str], *, window: int, before: int
) -> tuple[dict, dict]:
    """Counts per (project, window start) of windows starting before ``before``: as the
    rates wrote them to ``feedback_rates``, and as the ``feedback`` table says they are
    (its outcomes: feedback still waiting for its trace is not counted yet)."""
    rates = sql_rows(thumbline_bin, env,  # rows by (environment, capability), summed
        "SELECT project, toUnixTimestamp(window_start) AS s, sum(good) AS good, "
        "sum(bad) AS bad, sum(neutral) AS neutral, sum(implicit) AS implicit "
        f"FROM thumbline.feedback_rates FINAL WHERE window_seconds = {window} AND model = '*' "
        f"AND s < {before} GROUP BY project, s HAVING good + bad + neutral + implicit > 0 "
        "ORDER BY project, s")  # fmt: skip
    table = sql_rows(thumbline_bin, env,
        "SELECT project, "
        f"toUnixTimestamp(toStartOfInterval(ts, INTERVAL {window} SECOND)) AS s, "
        "countIf(source != 'implicit' AND label = 'good') AS good, "
        "countIf(source != 'implicit' AND label = 'bad') AS bad, "
        "countIf(source != 'implicit' AND label NOT IN ('good', 'bad')) AS neutral, "
        "countIf(source = 'implicit') AS implicit FROM thumbline.feedback FINAL "
        f"WHERE s < {before} AND retracted = 0 AND join_status != 'pending' GROUP BY project, s "
        "ORDER BY project, s")  # fmt: skip
    by_window = lambda rows: {(r.pop("project"), r.pop("s")): r for r in rows}  # noqa: E731
    return by_window(rates), by_window(table)


def rate_mismatches(
    run_query: Callable[[str], list[tuple]], db: str, *, window: int, where: str
) -> tuple[int, list[str]]:
    """Every written rate window (base and sliding, per model and per capability) against the
    ``feedback`` table's rows it covers (outcomes only: pending rows are not counted yet),
    and every base window the table has against a row.

    ``run_query`` runs SQL on the store; ``where`` selects the test's rows in both tables (by
    project). Returns how many rate rows were checked, and what differs.
    """
    table = run_query(
        "SELECT toUnixTimestamp64Milli(ts) / 1000, project, environment, model, capability, "
        f"label, source FROM {db}.feedback FINAL WHERE {where} AND retracted = 0 "
        "AND join_status != 'pending'"
    )
    written = run_query(
        "SELECT window_seconds, toUnixTimestamp(window_start), project, environment, model, "
        f"capability, good, bad, neutral, implicit FROM {db}.feedback_rates FINAL WHERE {where}"
    )
    # thumbline sql's JSON quotes 64-bit integers: numbers as numbers
    written = [(int(r[0]), float(r[1]), *r[2:6], *(int(x) for x in r[6:])) for r in written]
    bases: dict[tuple[float, tuple[str, ...]], list[int]] = {}  # the table, by base window
    for ts, project, environment, model, capability, label, source in table:
        start = float(ts) // window * window
        column = 3 if source == "implicit" else 0 if label == "good" else 1 if label == "bad" else 2
        for dims in ((project, environment, model, "*"), (project, environment, "*", capability)):
            bases.setdefault((start, dims), [0, 0, 0, 0])[column] += 1
    problems = []
    for size, start, *rest in written:
        dims, have = tuple(rest[:4]), tuple(rest[4:])
        want = [0, 0, 0, 0]
        for base in range(int(start), int(start + size), window):
            for i, n in enumerate(bases.get((float(base), dims), ())):
                want[i] += n
        if tuple(want) != have:
            problems.append(f"{size}s window at {start} {dims}: wrote {have}, table has {want}")
    wrote = {(start, tuple(rest[:4])) for size, start, *rest in written if size == window}
    problems += [f"no {window}s window at {start} for {dims}" for start, dims in bases
                 if (start, dims) not in wrote]  # fmt: skip
    return len(written), sorted(problems)
