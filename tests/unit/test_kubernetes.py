"""deploy/kubernetes: valid manifests that run what the README says, as it says.

No cluster here: each manifest is validated (strictly: no unknown field) against
the Kubernetes API's schemas that kubernetes-validate ships, and read for what
the schemas cannot say: every variable is a setting, probes reach endpoints the
processes serve, workers fit the partitions, disruption budgets select pods,
every container runs as a non-root user on a read-only root.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from thumbline.errors import ConfigError
from thumbline.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
#: the oldest Kubernetes still maintained by the big clouds' extended support
VERSION = "1.30.0"
SECRET_EXAMPLE = "secret.example.yaml"


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource, by file name (one resource per file)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            [doc] = list(yaml.safe_load_all(path.read_text()))
            found[path.name] = doc
    return found


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests().values() if d["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {n: d["spec"]["template"]["spec"] for n, d in of_kind("Deployment").items()}
    specs.update({n: d["spec"]["template"]["spec"] for n, d in of_kind("Job").items()})
    return specs


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [(n, c) for n, spec in pod_specs().items() for c in spec["containers"]]


def config() -> dict[str, str]:
    return of_kind("ConfigMap")["thumbline"]["data"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """What a container's THUMBLINE_ variables are (the Secret's as its example says)."""
    secret = of_kind("Secret")["thumbline"]["stringData"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config() if "configMapRef" in source else secret)
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secret[ref["key"]] if ref else var["value"]
    return env


def settings_of(container: dict[str, Any], **overrides: str) -> Settings:
    values = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env_of(container).items()}
    return load_settings(**{**values, **overrides})


def container(deployment: str) -> dict[str, Any]:
    [one] = pod_specs()[deployment]["containers"]
    return one


@pytest.mark.parametrize(
    "name", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_every_manifest_is_valid_against_the_kubernetes_api(name):
    [doc] = list(yaml.safe_load_all((K8S / name).read_text()))
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_refuses_a_misspelled_field():
    broken = copy.deepcopy(of_kind("Deployment")["thumbline-worker"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_kustomize_applies_every_manifest_but_the_secret_example():
    listed = set(kustomization()["resources"])
    assert listed == set(manifests()) - {SECRET_EXAMPLE}
    assert kustomization()["namespace"] == of_kind("Namespace")["thumbline"]["metadata"]["name"]
    images = {i["name"] for i in kustomization()["images"]}
    assert {c["image"] for _, c in containers()} == images == {"thumbline"}


def test_every_thumbline_variable_they_set_is_a_setting():
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    named = set(config()) | set(of_kind("Secret")["thumbline"]["stringData"])
    for _, c in containers():
        named |= {v["name"] for v in c.get("env", [])}
        named |= {v["valueFrom"]["secretKeyRef"]["key"] for v in c.get("env", []) if
                  "valueFrom" in v}  # fmt: skip
    assert named and named <= known, named - known


def test_the_config_map_and_secret_they_read_exist():
    for _, c in containers():
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] in of_kind("ConfigMap")
        for var in c.get("env", []):
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] in of_kind("Secret")
            assert ref["key"] in of_kind("Secret")["thumbline"]["stringData"]


def test_each_process_gets_valid_settings_for_the_servers_and_only_the_secrets_it_needs():
    key = "tl_0123456789abcdef_Qm7Zr2Xk9Lp4Vw8Tn3Hc6Jd1Fy5Gb0Ss-Ue_Oa2Ri4Pq"
    for name, c in containers():
        s = settings_of(c, bootstrap_admin_key=key)
        assert not s.embedded_broker and not s.store_is_chdb, name  # the slim image
        admin = "THUMBLINE_BOOTSTRAP_ADMIN_KEY" in env_of(c)
        assert admin == (name == "thumbline-gateway"), name


def test_the_secret_example_holds_placeholders_that_no_gateway_accepts():
    secret = of_kind("Secret")["thumbline"]["stringData"]
    for name, value in secret.items():
        assert "REPLACE-ME" in value, name
    with pytest.raises(ConfigError, match="THUMBLINE_BOOTSTRAP_ADMIN_KEY"):
        load_settings(bootstrap_admin_key=secret["THUMBLINE_BOOTSTRAP_ADMIN_KEY"])


def test_workers_are_no_more_than_the_partitions():
    workers = of_kind("Deployment")["thumbline-worker"]
    partitions = settings_of(container("thumbline-worker")).partitions
    assert 1 < workers["spec"]["replicas"] <= partitions
    assert workers["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def probe_port(c: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(number)


def test_worker_probes_and_scrape_annotations_reach_its_metrics_port():
    c = container("thumbline-worker")
    s = settings_of(c)
    assert s.metrics_enabled and s.metrics_host == "0.0.0.0"  # noqa: S104 (in its pod)
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for kind, path in paths.items():
        assert probe_port(c, c[kind]) == s.metrics_port, kind
        assert c[kind]["httpGet"]["path"] == path, kind  # see tests/unit/thumbline/test_metrics.py
    annotations = of_kind("Deployment")["thumbline-worker"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == str(s.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_gateway_probes_reach_its_health_endpoints_and_the_service_its_port():
    c = container("thumbline-gateway")
    s = settings_of(c, bootstrap_admin_key="")
    served = set(
        re.findall(r'@app\.get\("(/\w+)"', (ROOT / "producers" / "gateway.py").read_text())
    )
    assert {"/healthz", "/readyz", "/metrics"} <= served
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # Kafka and keys answer
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe_port(c, c[kind]) == s.gateway_port, kind
    assert s.gateway_host == "0.0.0.0"  # noqa: S104 (in its pod)
    [port] = of_kind("Service")["thumbline-gateway"]["spec"]["ports"]
    assert probe_port(c, {"httpGet": {"port": port["targetPort"]}}) == s.gateway_port
    annotations = of_kind("Deployment")["thumbline-gateway"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == str(s.gateway_port)


def test_services_and_disruption_budgets_select_the_pods_of_their_deployment():
    deployments = of_kind("Deployment")
    selectors = {
        **{f"pdb/{n}": d["spec"]["selector"]["matchLabels"]
           for n, d in of_kind("PodDisruptionBudget").items()},
        **{f"svc/{n}": d["spec"]["selector"] for n, d in of_kind("Service").items()},
    }  # fmt: skip
    assert set(selectors) == {"pdb/thumbline-worker", "pdb/thumbline-gateway",
                              "svc/thumbline-gateway"}  # fmt: skip
    for name, selector in selectors.items():
        target = deployments[name.split("/", 1)[1]]
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
        others = [d for n, d in deployments.items() if d is not target]
        for other in others:  # and no other deployment's
            assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()


def test_the_migrate_job_applies_migrations_and_creates_the_topics():
    [job] = of_kind("Job").values()
    [c] = job["spec"]["template"]["spec"]["containers"]
    script = " ".join(c["command"])
    assert "thumbline migrate" in script and "thumbline topics create" in script
    assert "THUMBLINE_PARTITIONS" in env_of(c)  # the same partitions as the workers read


@pytest.mark.parametrize("name", ["thumbline-worker", "thumbline-gateway", "thumbline-migrate"])
def test_every_pod_runs_non_root_on_a_read_only_root_with_writable_data_and_tmp(name):
    spec = pod_specs()[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False  # it never talks to the API
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounted = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", str(settings_of(c, bootstrap_admin_key="").data_dir)} <= mounted
        resources = c["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]


def test_the_readmes_first_apply_selects_the_config_and_the_migrate_job_only():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n### Running in production\n", 1)[1].split("\n## ", 1)[0]
    selectors = set(re.findall(r"-l '([^']+)'", section))
    assert selectors == {"app.kubernetes.io/component in (config,migrate)"}
    wanted = {"config", "migrate"}
    picked = {
        (d["kind"], d["metadata"]["name"])
        for d in manifests().values()
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in wanted
    }
    assert picked == {("ConfigMap", "thumbline"), ("Job", "thumbline-migrate")}
