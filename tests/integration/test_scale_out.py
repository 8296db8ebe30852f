"""Scale-out: the stream in several `thumbline worker` processes, no process special.

`thumbline up` with THUMBLINE_STREAM_ENABLED=false is the store endpoint and the
gateway; three workers share 12 partitions of every topic. Load comes from the
SDK (with a spike of bad feedback on one project), from the gateway and from a
foreign Kafka client (librdkafka, its own partitioner). One worker is killed
-9 mid-run and a fourth joins later. At the end the tables hold exactly what
was sent, every rate window equals the feedback table's count, and the spike
raised one alert.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import (
    GRACE,
    SPIKE_RULES,
    gone,
    rate_windows,
    sql_rows,
    start_up,
    stop,
)
from tests.integration.test_crash import final_counts, settle
from thumbline.children import terminate
from thumbline.kafka import ensure_topics
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadSpec, Spike, run_load
from thumbline.schemas import Topics

PARTITIONS = 12
WINDOW = 2


def start_worker(thumbline_bin: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen([thumbline_bin, "worker"], env=env, stdout=sink, stderr=sink)


def running(log: Path, timeout: float = 90.0) -> None:
    """Wait until the worker writing ``log`` says it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "worker running" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the worker did not start: {log.read_text(errors='replace')[-3000:]}")


def metrics_url(log: Path) -> str:
    """The worker's /metrics address, from the line it prints when it runs."""
    line = next(x for x in log.read_text(errors="replace").splitlines() if "worker running" in x)
    return line.split("metrics ", 1)[1].split(")", 1)[0]


def consumed(url: str, topic: str) -> float:
    """What the worker serving ``url`` read of ``topic`` (its events_consumed counter)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    wanted = f'thumbline_events_consumed_total{{topic="{topic}"}}'
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(wanted))


def ready(url: str) -> int:
    try:
        with urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=10) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pairs(prefix: str, project: str, n: int) -> list[tuple[str, dict, dict]]:
    """``n`` traces with a thumb up each, as another product would send them (up: the
    spike on project-0 is the one spike of the run)."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        trace_id = f"{prefix}{project}-{i}"
        trace = {"trace_id": trace_id, "span_id": "s", "model": "m-other", "project": project,
                 "start_time": now}  # fmt: skip
        thumb = {"event_id": f"e-{trace_id}", "trace_id": trace_id, "kind": "thumb",
                 "value": "up", "project": project, "ts": now}  # fmt: skip
        out.append((trace_id, trace, thumb))
    return out


def send_foreign(bootstrap: str, topics: Topics, events: list[tuple[str, dict, dict]]) -> None:
    """One JSON object per message from librdkafka (CRC32-ish partitioner, not murmur2)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failed: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(error)

    for trace_id, trace, thumb in events:
        for topic, event in ((topics.traces.name, trace), (topics.feedback.name, thumb)):
            producer.produce(
                topic, orjson.dumps(event), key=trace_id.encode(), on_delivery=delivered
            )
            producer.poll(0)
    assert producer.flush(30) == 0 and not failed


def send_through_gateway(url: str, events: list[tuple[str, dict, dict]]) -> None:
    """Traces and thumbs in batches of 50, as a browser or another language would post them."""
    for start in range(0, len(events), 50):
        batch = events[start : start + 50]
        for path, body in (("/v1/traces", [t for _, t, _ in batch]),
                           ("/v1/feedback", [f for _, _, f in batch])):  # fmt: skip
            request = urllib.request.Request(
                f"{url}{path}", data=orjson.dumps(body), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
                assert response.status == 202


@pytest.mark.slow  # about two minutes: .ci/run runs it after the default run
async def test_workers_share_the_stream_survive_kill_9_and_a_new_member_exactly(
    broker, thumbline_bin, clean_env, tmp_path
):
    prefix = f"{unique('scale')}."
    topics = Topics.build(prefix, PARTITIONS)
    await ensure_topics(broker.bootstrap, topics.all())
    rules = tmp_path / "rules.toml"
    rules.write_text(SPIKE_RULES)
    env = {
        **clean_env,
        "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "THUMBLINE_TOPIC_PREFIX": prefix,
        "THUMBLINE_PARTITIONS": str(PARTITIONS),
        "THUMBLINE_OTLP_TOPIC": f"{prefix}otlp_spans",
        "THUMBLINE_JOIN_GRACE_SECONDS": GRACE,
        "THUMBLINE_SINK_MAX_SECONDS": "0.2",
        "THUMBLINE_RATE_WINDOW_SECONDS": str(WINDOW),
        "THUMBLINE_RATE_SLIDING_SECONDS": "6",
        # a killed worker is noticed after the session timeout (6 s): its windows wait
        "THUMBLINE_RATE_LATENESS_SECONDS": "12",
        "THUMBLINE_ALERT_RULES": str(rules),
        "THUMBLINE_METRICS_PORT": "0",
        "THUMBLINE_GATEWAY_PORT": "0",
    }
    # the store endpoint and the gateway; the stream is the workers'
    up = start_up(thumbline_bin, {**env, "THUMBLINE_STREAM_ENABLED": "false"}, tmp_path / "data",
                  log=tmp_path / "up.log")  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert up.info.gateway_url
        for n in range(3):
            workers.append(start_worker(thumbline_bin, env, tmp_path / f"worker-{n}.log"))
        for n in range(3):
            await asyncio.to_thread(running, tmp_path / f"worker-{n}.log")
        spec = LoadSpec(
            rate=150, duration=40, projects=6, environments=1, models=1, capabilities=1,
            bad_share=0.05, early_share=0.1, seed=41, run_id=unique("so"),
            spike=Spike(start=12, end=26, bad_share=0.7, project="project-0"),
        )  # fmt: skip
        gateway = pairs(prefix, "via-gateway", 400)
        foreign = pairs(prefix, "via-librdkafka", 400)
        async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
            load = asyncio.create_task(run_load(fb, spec))
            others = asyncio.gather(
                asyncio.to_thread(send_through_gateway, up.info.gateway_url, gateway),
                asyncio.to_thread(send_foreign, broker.bootstrap, topics, foreign),
            )
            await asyncio.sleep(10)  # mid-run: every worker holds partitions and state
            os.kill(workers[0].pid, signal.SIGKILL)
            assert await asyncio.to_thread(gone, workers[0].pid, within=30)
            await asyncio.sleep(6)
            workers.append(start_worker(thumbline_bin, env, tmp_path / "worker-3.log"))
            await asyncio.to_thread(running, tmp_path / "worker-3.log")
            report = await load
            await others
        want = {
            "feedback": report.feedback + 800, "distinct_events": report.feedback + 800,
            "orphans": report.orphans, "traces": report.traces + 800, "dead": 0,
        }  # fmt: skip
        got = await settle(lambda: final_counts(thumbline_bin, up.env), want, timeout=120)
        assert got == want

        # the work was shared: every live worker joined and counted rates of its projects
        urls = [metrics_url(tmp_path / f"worker-{n}.log") for n in (1, 2, 3)]
        assert all(ready(url) == 200 for url in urls)
        assert all(consumed(url, topics.feedback.name) > 0 for url in urls)  # joined some
        assert sum(consumed(url, topics.enriched.name) > 0 for url in urls) >= 2

        horizon = int(time.time()) - 2
        rates, table = await settle_windows(thumbline_bin, up.env, horizon)
        assert report.feedback > 4000 and len(table) > 40
        assert rates == table

        # every window of the spike is complete and judged by now
        firing = "SELECT alert_id, project FROM thumbline.alerts FINAL WHERE state = 'firing'"
        alerts = sql_rows(thumbline_bin, up.env, firing)
        assert [a["project"] for a in alerts] == ["project-0"]  # one alert for the one spike
    finally:
        for proc in workers:
            terminate(proc)
        stop(up)
    assert all(proc.poll() is not None for proc in workers)


async def settle_windows(thumbline_bin: str, env: dict[str, str], before: int):
    """The written rate windows and the feedback table's, once they agree (or after 90 s)."""
    deadline = time.monotonic() + 90
    while True:
        rates, table = rate_windows(thumbline_bin, env, window=WINDOW, before=before)
        if rates == table or time.monotonic() > deadline:
            return rates, table
        await asyncio.sleep(1.0)


def test_a_worker_without_a_store_it_can_share_says_what_to_start(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
           "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap}  # fmt: skip
    result = subprocess.run(
        [thumbline_bin, "worker"], env=env, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert result.returncode == 2
    assert "start `thumbline up`" in result.stderr and "THUMBLINE_CLICKHOUSE_URL" in result.stderr
    assert not (tmp_path / "data" / "chdb").exists()  # it opened no store of its own
