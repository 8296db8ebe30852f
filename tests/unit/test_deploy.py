"""deploy/: the Prometheus config and rules and the Grafana dashboard use series that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import system_tool
from thumbline.metrics import Metrics
from thumbline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERIES = re.compile(r"\bthumbline_[a-z_]+\b")


def exported_series() -> set[str]:
    """Every series name Metrics can export (counter, histogram suffixes included)."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "thumbline.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_series_used_is_one_thumbline_exports(source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    used = {name for expr in exprs for name in SERIES.findall(expr)}
    assert used, f"no thumbline series in the {source}"
    assert used <= exported_series(), used - exported_series()


def test_the_dashboard_shows_what_on_call_needs():
    titles = " ".join(p["title"].lower() for p in dashboard()["panels"])
    for topic in ("bad-feedback rate per model", "volume", "freshness", "lag", "alerts"):
        assert topic in titles
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_promtool_accepts_the_rules_and_the_config(tmp_path):
    PROMTOOL = system_tool("promtool", package="prometheus")  # noqa: N806
    rules = subprocess.run(  # noqa: S603 (a dev tool, our file)
        [PROMTOOL, "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # The config names the rules by their path inside the container: point it here.
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(
        config.replace("/etc/prometheus/rules.yml", str(DEPLOY / "prometheus" / "rules.yml"))
    )
    checked = subprocess.run(  # noqa: S603
        [PROMTOOL, "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_collector_writes_where_thumbline_reads_in_the_encoding_it_expects():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    collector = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    settings = load_settings()
    kafka = collector["exporters"]["kafka"]
    assert kafka["traces"]["topic"] == settings.otlp_topic
    assert kafka["traces"]["encoding"] == settings.otlp_encoding
    # the broker address thumbline itself uses inside the compose network
    worker_env = compose["services"]["worker"]["environment"]
    assert kafka["brokers"] == [worker_env["THUMBLINE_KAFKA_BOOTSTRAP"]]
    assert "kafka" in collector["service"]["pipelines"]["traces"]["exporters"]
    mounted = compose["services"]["otel-collector"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).resolve() == (DEPLOY / "otel-collector" / "config.yaml").resolve()
