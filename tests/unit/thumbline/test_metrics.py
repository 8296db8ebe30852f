"""The metrics server of a worker: /metrics for Prometheus, /healthz and /readyz for probes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics, MetricsServer


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served():
    reason: list[str | None] = ["waiting for the store"]
    metrics = Metrics(CollectorRegistry())
    server = MetricsServer(metrics, host="127.0.0.1", port=0, ready=lambda: reason[0])
    try:
        yield server.url.removesuffix("/metrics"), reason, metrics
    finally:
        server.stop()


def test_a_worker_is_alive_while_it_serves_and_ready_only_when_nothing_holds_it_back(served):
    base, reason, _ = served
    assert get(f"{base}/healthz")[0] == 200
    status, body = get(f"{base}/readyz")
    assert status == 503 and json.loads(body)["reason"] == "waiting for the store"
    reason[0] = None
    assert get(f"{base}/readyz") == (200, '{"status":"ok"}')


def test_metrics_are_served_beside_the_probes(served):
    base, _, metrics = served
    metrics.events_consumed.labels("t.feedback").inc(3)
    status, text = get(f"{base}/metrics")
    assert status == 200 and 'thumbline_events_consumed_total{topic="t.feedback"} 3.0' in text


def test_without_a_readiness_check_every_path_is_metrics_as_before():
    server = MetricsServer(Metrics(CollectorRegistry()), host="127.0.0.1", port=0)
    try:
        status, text = get(server.url.replace("/metrics", "/readyz"))
        assert status == 200 and "thumbline_" in text
    finally:
        server.stop()
