"""docker-compose.yml: what can be checked without Docker.

Docker does not run here, so the file is read: it is valid Compose, every
``THUMBLINE_*`` variable it sets is a setting, every service waited for has a
health check, every file it mounts exists, Prometheus scrapes every worker and
the gateway where they serve /metrics, workers scale (no fixed name or port),
the gateway is published with its admin key from the env file only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from thumbline.errors import ConfigError
from thumbline.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE = ROOT / "deploy" / "compose.env.example"
#: ${NAME:-default} and ${NAME:?error}: how compose fills a value from the env file
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def thumbline_services() -> dict[str, dict]:
    """The services that run the thumbline image."""
    return {n: s for n, s in services().items() if s.get("image") == "thumbline:local"}


def defaults(value: object) -> str:
    """``value`` as compose fills it with no env file: ${X:-d} gives d."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) == "-" else "", str(value))


def settings_of(service: dict, **extra: str) -> Settings:
    env = {k: defaults(v) for k, v in service["environment"].items()}
    env.update(extra)
    return load_settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()})


def test_the_file_is_valid_compose():
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_thumbline_services_are_migrate_worker_and_gateway():
    assert set(thumbline_services()) == {"migrate", "worker", "gateway"}


@pytest.mark.parametrize("name", ["migrate", "worker", "gateway"])
def test_every_thumbline_variable_a_service_sets_is_a_setting(name):
    env = thumbline_services()[name]["environment"]
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    ours = {k for k in env if k.startswith(ENV_PREFIX)}
    assert ours and ours <= known, ours - known
    assert set(env) == ours, "only THUMBLINE_ settings: anything else is read by nothing"


@pytest.mark.parametrize("name", ["migrate", "worker", "gateway"])
def test_every_thumbline_service_is_configured_for_the_servers_not_the_embedded_parts(name):
    s = settings_of(thumbline_services()[name], bootstrap_admin_key="")
    assert not s.embedded_broker and not s.store_is_chdb  # the slim image has neither
    advertised = services()["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{s.kafka_bootstrap}" in advertised
    assert urlsplit(s.store_url).hostname == "clickhouse"
    assert s.reader_url and urlsplit(s.reader_url).username == "thumbline_reader"


def test_every_service_waited_for_exists_and_says_when_it_is_ready():
    all_services = services()
    for name, service in all_services.items():
        for target, how in service.get("depends_on", {}).items():
            assert target in all_services, f"{name} waits for {target}, which does not exist"
            condition = how["condition"]
            if condition == "service_completed_successfully":
                assert all_services[target].get("restart") == "no", target  # a one-shot
            else:
                assert "healthcheck" in all_services[target], f"{target} has no health check"
    for name in thumbline_services():
        if name != "migrate":
            assert "healthcheck" in all_services[name], name


def test_workers_and_gateway_start_after_migrate_has_succeeded():
    migrate = thumbline_services()["migrate"]
    script = " ".join(migrate["entrypoint"])
    assert "thumbline migrate" in script and "thumbline topics create" in script
    for name in ("worker", "gateway", "otel-collector"):
        waits = services()[name]["depends_on"]
        assert waits["migrate"] == {"condition": "service_completed_successfully"}, name


def test_every_file_mounted_exists_in_the_repository():
    mounted = [
        (name, volume.split(":")[0])
        for name, service in services().items()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    assert len(mounted) >= 6
    for name, source in mounted:
        assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_workers_scale_with_no_fixed_name_or_host_port():
    worker = services()["worker"]
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in worker, f"worker sets {fixed}: --scale worker=3 would clash"
    assert worker["command"] == ["worker"]


def test_the_partitions_leave_no_worker_of_the_readmes_example_idle():
    s = settings_of(thumbline_services()["worker"])
    assert s.partitions >= 3  # docker compose up --scale worker=3
    example = dict(
        line.split("=", 1) for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert int(example["THUMBLINE_PARTITIONS"]) >= 3


def test_the_gateway_is_published_on_its_port_beyond_loopback():
    gateway = services()["gateway"]
    s = settings_of(gateway, bootstrap_admin_key="")
    assert s.gateway_host == "0.0.0.0"  # noqa: S104 (inside its container)
    assert f"{s.gateway_port}:{s.gateway_port}" in gateway["ports"]
    assert s.gateway_port == 8788


def test_the_admin_key_comes_from_the_env_file_only():
    value = services()["gateway"]["environment"]["THUMBLINE_BOOTSTRAP_ADMIN_KEY"]
    match = INTERPOLATION.fullmatch(value)
    assert match and match.group(1) == "THUMBLINE_BOOTSTRAP_ADMIN_KEY"
    assert match.group(2) == "?", "no default: compose refuses to start without one"
    assert "compose.env.example" in match.group(3)  # the error says where to put it
    for name, service in services().items():  # no other service gets it
        if name != "gateway":
            assert "THUMBLINE_BOOTSTRAP_ADMIN_KEY" not in service.get("environment", {})
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert tracked.stdout == ""


def test_the_example_env_file_holds_placeholders_that_no_gateway_accepts():
    example = dict(
        line.split("=", 1) for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    referenced = {m.group(1) for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    assert set(example) <= referenced, set(example) - referenced
    assert {"THUMBLINE_BOOTSTRAP_ADMIN_KEY", "CLICKHOUSE_PASSWORD",
            "CLICKHOUSE_READER_PASSWORD"} <= set(example)  # fmt: skip
    # left as copied, every secret is empty, and ${NAME:?...} refuses an empty value as it
    # does an unset one: a placeholder such as REPLACE-ME would start ClickHouse with it
    for name, value in example.items():
        if name != "THUMBLINE_PARTITIONS":
            assert value == "", name
    with pytest.raises(ConfigError, match="THUMBLINE_BOOTSTRAP_ADMIN_KEY"):
        load_settings(bootstrap_admin_key=example["THUMBLINE_BOOTSTRAP_ADMIN_KEY"] or "tl_x_y")


def test_the_example_env_file_says_how_to_make_each_secret_url_safe():
    # the ClickHouse passwords go into URLs (http://thumbline:PASSWORD@clickhouse:8123):
    # token_urlsafe makes letters, digits, - and _ only
    lines = EXAMPLE.read_text().splitlines()
    for name in ("CLICKHOUSE_PASSWORD", "CLICKHOUSE_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        start = at
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        assert "token_urlsafe" in "\n".join(lines[start:at]), name  # its own comment says


def test_grafana_asks_everyone_to_log_in():
    # an anonymous viewer could run SQL through the ClickHouse data source
    grafana = services()["grafana"]["environment"]
    assert str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"


def prometheus_jobs() -> dict[str, list[tuple[str, int]]]:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        assert "static_configs" not in job, "a static target misses scaled replicas"
        for sd in job["dns_sd_configs"]:
            assert sd["type"] == "A"  # every replica's address, not one
            jobs.setdefault(job["job_name"], []).extend((n, sd["port"]) for n in sd["names"])
    return jobs


def test_prometheus_scrapes_every_worker_and_the_gateway_where_they_serve_metrics():
    jobs = prometheus_jobs()
    worker = settings_of(services()["worker"])
    gateway = settings_of(services()["gateway"], bootstrap_admin_key="")
    assert jobs["thumbline"] == [("worker", worker.metrics_port)]
    assert worker.metrics_host == "0.0.0.0" and worker.metrics_enabled  # noqa: S104
    assert jobs["thumbline-gateway"] == [("gateway", gateway.gateway_port)]
    # The alert rules watch both jobs.
    rules = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    for job in jobs:
        assert f'up{{job="{job}"}} == 0' in rules, job


def test_grafana_gets_prometheus_and_clickhouse_on_the_read_only_user():
    grafana = services()["grafana"]
    provisioned = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
    sources = [
        source
        for path in sorted(provisioned.glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    by_type = {s["type"]: s for s in sources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    clickhouse = by_type["grafana-clickhouse-datasource"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert clickhouse["jsonData"]["host"] == "clickhouse"
    assert clickhouse["jsonData"]["username"] == "thumbline_reader"
    assert clickhouse["jsonData"]["defaultDatabase"] == "thumbline"
    password = clickhouse["secureJsonData"]["password"]
    assert password.startswith("$") and password.lstrip("$") in grafana["environment"]
    # The same password as the reader user's in the clickhouse container.
    assert (
        grafana["environment"]["CLICKHOUSE_READER_PASSWORD"]
        == services()["clickhouse"]["environment"]["CLICKHOUSE_READER_PASSWORD"]
    )
    assert "config.d/thumbline.xml" in " ".join(services()["clickhouse"]["volumes"])


def test_the_image_installs_the_slim_extra_as_a_numeric_non_root_user():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    build = thumbline_services()["worker"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "deploy" / "Dockerfile"
    )
    assert (
        'pip install ".[server]"' in dockerfile
        and "embedded" not in re.findall(r"pip install (\S+)", dockerfile)[0]
    )
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1].isdigit() and user[-1] != "0"


def production_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n### Running in production\n", 1)[1].split("\n## ", 1)[0]


def test_the_readmes_production_commands_name_what_exists():
    section = production_section()
    for path in set(re.findall(r"\b(deploy/[\w./-]+\w)", section)):
        assert (ROOT / path).exists(), path
    for service in re.findall(r"docker compose (?:exec|run --rm) (\S+)", section):
        assert service in services(), service
    for service in re.findall(r"--scale (\w+)=", section):
        assert service in services(), service
    for kind, name in re.findall(r"\b(deployment|job|svc)/([\w-]+)", section):
        wanted = {"deployment": "Deployment", "job": "Job", "svc": "Service"}[kind]
        found = {
            yaml.safe_load(p.read_text())["metadata"]["name"]
            for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml")
            if p.name != "kustomization.yaml" and yaml.safe_load(p.read_text())["kind"] == wanted
        }
        assert name in found, f"{kind}/{name}"
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    named = set(re.findall(r"`(Thumbline\w+)`", section))
    assert named == alerts, named ^ alerts  # every alert explained, and no other


def test_the_readmes_thumbline_commands_exist():
    from typer.main import get_command

    from thumbline.cli.commands import app

    root = get_command(app)
    section = production_section()
    named = re.findall(r"`thumbline ([a-z]+(?: [a-z]+)?)", section)
    named += re.findall(r"exec \w+ thumbline ([a-z]+(?: [a-z]+)?)", section)
    assert {"migrate", "gateway", "topics create", "keys create"} <= set(named)
    for words in named:
        first, *rest = words.split()
        if first == "worker" and "worker" not in root.commands:  # type: ignore[attr-defined]
            continue  # the lead's command, from its own branch
        assert first in root.commands, words  # type: ignore[attr-defined]
        command = root.commands[first]  # type: ignore[attr-defined]
        if rest and hasattr(command, "commands"):
            assert rest[0] in command.commands, words


#: The only service a compose deployment offers beyond the host: the gateway (API keys).
PUBLIC = {"gateway"}


def test_no_secret_has_a_default_that_would_ship():
    # ${CLICKHOUSE_PASSWORD:-thumbline} starts a ClickHouse every reader of this file can
    # log into: a secret comes from the env file, or compose refuses to start.
    text = COMPOSE.read_text()
    secrets = [m for m in INTERPOLATION.finditer(text)
               if re.search(r"PASSWORD|SECRET|_KEY\b|TOKEN", m.group(1))]  # fmt: skip
    assert {m.group(1) for m in secrets} >= {
        "CLICKHOUSE_PASSWORD", "CLICKHOUSE_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
        "THUMBLINE_BOOTSTRAP_ADMIN_KEY",
    }  # fmt: skip
    for match in secrets:
        assert match.group(2) == "?" and "compose.env.example" in match.group(3), match.group(0)


def test_only_the_gateway_is_published_beyond_the_host():
    # Kafka and ClickHouse take no or the env file's passwords, Grafana lets anonymous
    # viewers query ClickHouse, the Collector takes any span: from other machines only the
    # gateway, which wants an API key, is reached.
    for name, service in services().items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port}"
            if name in PUBLIC:
                continue
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} on every interface"
