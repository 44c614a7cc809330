"""The deployment files (Dockerfile, compose.yaml, Prometheus and Grafana, Kubernetes),
checked as far as this machine can check them without a container runtime or a cluster:
each against its schema, against each other (names, ports, labels, selectors), and
against ocak itself (the metrics the dashboard draws exist, the web guard admits the
host names the files use, the probes' paths answer).

Not run here: building the image, starting the containers, applying the manifests
(docs/deploy.md says so)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app_helpers import run_app as run
from paths import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMA = ROOT / "tests" / "data" / "schemas" / "compose-spec.json"
CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load(ROOT / "compose.yaml")
    return data


def test_the_compose_file_follows_the_compose_specification() -> None:
    jsonschema.validate(compose(), json.loads(SCHEMA.read_text()))


def test_ocak_starts_after_the_models_are_in_place_and_reports_health() -> None:
    services = compose()["services"]
    assert set(services) == {"models-init", "ocak", "prometheus", "grafana", "postgres"}
    assert services["postgres"]["profiles"] == ["postgres"]  # only when asked for
    assert "ports" not in services["postgres"]  # reachable by the services only
    ocak, init = services["ocak"], services["models-init"]
    assert ocak["depends_on"]["models-init"]["condition"] == "service_completed_successfully"
    assert init["restart"] == "no" and "ocak models pull" in init["command"][0]
    assert "/health'" in " ".join(ocak["healthcheck"]["test"])
    # The two share the data volume the models are pulled into; nothing else holds them.
    assert "ocak-data:/data" in ocak["volumes"] and "ocak-data:/data" in init["volumes"]
    assert services["prometheus"]["depends_on"]["ocak"]["condition"] == "service_healthy"
    # Published on loopback only: an operator opens them up on purpose.
    for name in ("ocak", "prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    steps = parser.structure
    stages = [s for s in steps if s["instruction"] == "FROM"]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    runtime = steps[steps.index(stages[-1]) :]
    users = [s["value"] for s in runtime if s["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    health = [s["value"] for s in runtime if s["instruction"] == "HEALTHCHECK"]
    assert health and "/health" in health[0]
    installs = " ".join(s["value"] for s in runtime if s["instruction"] == "RUN")
    assert "libgomp1" in installs  # llama.cpp's OpenMP: without it libllama.so does not load
    assert not any(tool in installs for tool in ("build-essential", "gcc", "git", "cmake"))
    # llama.cpp is built in a layer before the source is copied: editing ocak's code
    # does not rebuild it.
    values = [(s["instruction"], s["value"]) for s in steps]
    build_llama = next(
        i for i, (ins, v) in enumerate(values) if ins == "RUN" and "build_llama" in v
    )
    copy_src = next(
        i for i, (ins, v) in enumerate(values) if ins == "COPY" and v.startswith("src/ ")
    )
    assert build_llama < copy_src
    copied = " ".join(v for ins, v in values if ins in ("COPY", "ADD"))
    assert ".gguf" not in copied and "models" not in copied  # no model in the image
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "*.gguf", ".git/"} <= set(ignored)


def test_prometheus_scrapes_the_compose_service_and_grafana_reads_prometheus() -> None:
    prometheus = load(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["ocak:8000"]
    source = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (ds,) = source["datasources"]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "ocak.yaml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    mounts = compose()["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboards" / "ocak.json").read_text())
    return data


def test_the_dashboard_draws_only_metrics_ocak_exports(tmp_path: Path) -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:  # no two panels on the same grid cell
        g = p["gridPos"]
        cell = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & cell, p["title"]
        cells |= cell
        assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]

    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    drawn = {
        family(name)
        for p in panels
        for t in p["targets"]
        for name in re.findall(r"\bocak_[a-z_]+", t["expr"])
    }
    exported: set[str] = set()

    async def scrape(c: httpx.AsyncClient) -> None:
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
        text = (await c.get("/metrics")).text
        exported.update(map(family, re.findall(r"^# TYPE (ocak_[a-z_]+) ", text, re.M)))

    run(tmp_path, scrape)
    assert len(drawn) >= 10
    assert drawn <= exported, f"not exported by ocak: {sorted(drawn - exported)}"


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        ("ocak", "ocak:8000"),  # Prometheus in compose
        ("ocak,ocak.*", "ocak.default.svc.cluster.local:8000"),  # a client in the cluster
        ("ocak,ocak.*", "10.1.2.3:8000"),  # the kubelet's probes and a scrape by pod IP
    ],
)
def test_the_web_guard_admits_the_names_the_files_give(
    tmp_path: Path, allowed: str, host: str
) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        r = await c.get("/metrics", headers={"Host": host})
        assert r.status_code == 200, r.text
        r = await c.get("/health", headers={"Host": "evil.example:8000"})
        assert r.status_code == 403  # and no other name

    run(tmp_path, check, host="0.0.0.0", allowed_hosts=allowed.split(","), metrics_public=True)


def manifests() -> dict[str, dict[str, Any]]:
    kustomization = load(K8S / "kustomization.yaml")
    return {name: load(K8S / name) for name in kustomization["resources"]}


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("name", ["pvc.yaml", "deployment.yaml", "service.yaml", "hpa.yaml"])
def test_each_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    kubernetes_validate.validate(load(K8S / name), "1.30", strict=True)
    kubernetes_validate.validate(
        load(K8S / name), kubernetes_validate.latest_version(), strict=True
    )


def test_the_manifests_agree_with_each_other_and_with_ocak() -> None:
    m = manifests()
    deploy, service, monitor, hpa = (m[n] for n in ("deployment.yaml", "service.yaml",
                                                    "servicemonitor.yaml", "hpa.yaml"))  # fmt: skip
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (container,) = pod["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (init,) = pod["spec"]["initContainers"]
    assert "ocak models pull" in init["args"][0]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims == {m["pvc.yaml"]["metadata"]["name"]}
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "ocak_queue_depth"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"  # a CRD: no bundled schema
