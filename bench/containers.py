"""``make containers``: build ocak's image and run it, as an operator would.

Needs a Docker engine (``docker info`` answers) and Docker Compose (``docker compose`` or
Debian's ``docker-compose``). It builds the ``Dockerfile`` (build arguments from
``OCAK_BUILD_ARGS``, e.g. ``PYTHON_IMAGE=...`` where Docker Hub is out of reach), then:

1. ``compose.yaml`` with ``models-init`` and ``ocak``: the init step pulls a GGUF from a
   local stand-in for the Hugging Face Hub (tests/hub_stub.py; the only change to the file
   is an override naming that endpoint and the model) and exits 0; ``ocak`` starts after
   it, its healthcheck turns ``healthy``, and it answers a chat on the pulled model; a
   second ``up`` skips the pull; ``/metrics`` is served as Prometheus would scrape it.
2. The image as the Kubernetes manifest runs it: read-only root file system, only ``/data``
   and ``/tmp`` writable, uid 10001: healthy and answering.

Prometheus runs when its image is here (``OCAK_PROMETHEUS_IMAGE`` names a stand-in where
Docker Hub is out of reach): it must scrape ocak by its service name and count the chat.
Grafana is not started. Results go to BENCHMARKS.md ("Containers") with the times measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, header, table, write_section

IMAGE = "ocak:bench"
PROJECT = "ocakbench"
REPO = "test-org/SmolLM2-135M-Instruct-GGUF"


def sh(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done


def compose_command() -> list[str]:
    if sh("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("containers: no Docker Compose (docker compose or docker-compose): not run")


def wait_healthy(container: str, timeout: float = 300) -> float:
    """Seconds until Docker reports the container's healthcheck healthy."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = json.loads(sh("docker", "inspect", "--format", "{{json .State}}", container).stdout)
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return time.monotonic() - start
        if not state.get("Running"):
            logs = sh("docker", "logs", container, check=False)
            raise RuntimeError(f"{container} stopped: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        time.sleep(1)
    raise TimeoutError(f"{container} not healthy after {timeout} s")


def chat(base: str, model: str, key: str | None = None) -> str:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=120)
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def build() -> tuple[float, float]:
    """Build the image; (seconds, size in GB)."""
    args = [f"--build-arg={a}" for a in os.environ.get("OCAK_BUILD_ARGS", "").split() if a]
    start = time.monotonic()
    env = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    done = subprocess.run(["docker", "build", *args, "-t", IMAGE, str(ROOT)], env=env,
                          capture_output=True, text=True, timeout=3600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    seconds = time.monotonic() - start
    size = int(sh("docker", "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    return seconds, size / 1e9


def run_compose(rows: list[list[object]]) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from hub_stub import HubFile, HubRepo, HubStub  # the tests' stand-in Hub
    from ocak.models.store import default_model_path

    gguf = default_model_path()
    repo = HubRepo(REPO, {gguf.name: HubFile(gguf.name, source=gguf)})
    compose = compose_command()
    prometheus = prometheus_image()
    services = ["ocak", "prometheus"] if prometheus else ["ocak"]
    with HubStub(repo) as hub, tempfile.TemporaryDirectory() as tmp:
        override = Path(tmp) / "override.yaml"
        # The init step on the host's network, to reach the stand-in Hub on loopback.
        override.write_text(
            json.dumps(
                {
                    "services": {
                        "models-init": {
                            "image": IMAGE,
                            "network_mode": "host",
                            "environment": {"HF_ENDPOINT": hub.url, "OCAK_PULL": REPO},
                        },
                        "ocak": {"image": IMAGE},
                        "prometheus": {"image": prometheus} if prometheus else {},
                    }
                }
            )
        )
        files = ["-f", str(ROOT / "compose.yaml"), "-f", str(override), "-p", PROJECT]
        try:
            start = time.monotonic()
            sh(*compose, *files, "up", "-d", "--no-build", *services, timeout=900)
            up = time.monotonic() - start
            sep = "-" if compose[0] == "docker" else "_"  # v2 names a-b-1, v1 a_b_1
            init, server = (sep.join([PROJECT, name, "1"]) for name in ("models-init", "ocak"))
            healthy = wait_healthy(server) + up
            code = sh("docker", "inspect", "--format", "{{.State.ExitCode}}", init).stdout.strip()
            assert code == "0", f"models-init exited {code}"
            base = "http://127.0.0.1:8000"
            models = [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]]
            pulled = next(m for m in models if m != "default")
            answer = chat(base, pulled)
            metrics = httpx.get(f"{base}/metrics", timeout=30)
            assert metrics.status_code == 200 and "ocak_requests_total" in metrics.text
            uid = sh("docker", "exec", server, "id", "-u").stdout.strip()
            assert uid == "10001", uid
            checked = f"exit 0; {pulled} answered {answer[:30]!r}; uid {uid}; /metrics 200"
            rows.append(["compose up: pulled, ocak healthy", f"{healthy:.0f} s", checked])
            if prometheus:
                rows.append(scraped(prometheus))
            downloads = len(hub.downloads(gguf.name))
            sh(*compose, *files, "stop", timeout=300)
            start = time.monotonic()
            sh(*compose, *files, "up", "-d", "--no-build", "ocak", timeout=900)
            again = wait_healthy(server) + time.monotonic() - start
            assert len(hub.downloads(gguf.name)) == downloads, "the second up pulled again"
            rows.append(["compose up again (volume kept)", f"{again:.0f} s",
                         "the pull skipped (no download); healthy"])  # fmt: skip
        finally:
            sh(*compose, *files, "down", "-v", check=False, timeout=300)


def prometheus_image() -> str | None:
    """Prometheus's image: ``OCAK_PROMETHEUS_IMAGE`` (a stand-in where Docker Hub is out of
    reach) or compose.yaml's, when it is here or can be pulled; None otherwise."""
    name = os.environ.get("OCAK_PROMETHEUS_IMAGE", "prom/prometheus:v3.5.0")
    if sh("docker", "image", "inspect", name, check=False).returncode == 0:
        return name
    return name if sh("docker", "pull", name, check=False, timeout=300).returncode == 0 else None


def scraped(image: str, timeout: float = 90) -> list[object]:
    """Prometheus (compose.yaml's service, deploy/prometheus/prometheus.yml) scraping ocak by
    its service name: the target up, and the chat request counted."""
    base, start = "http://127.0.0.1:9090", time.monotonic()
    query = 'sum(ocak_requests_total{status="completed"})'
    while time.monotonic() - start < timeout:
        try:
            targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]
            up = [t for t in targets["activeTargets"] if t["health"] == "up"]
            found = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()
            result = found["data"]["result"]
            if up and result and float(result[0]["value"][1]) >= 1:
                seen = f"{up[0]['scrapeUrl']} up; {query} = {result[0]['value'][1]}"
                return ["Prometheus scraping ocak", f"{time.monotonic() - start:.0f} s", seen]
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(2)
    raise TimeoutError(f"Prometheus ({image}) did not scrape ocak in {timeout} s")


def run_read_only(rows: list[list[object]]) -> None:
    """The image under the Kubernetes manifest's restrictions, with keys from the start: an
    administrator key made in the volume first, then the server requiring it."""
    name = f"{PROJECT}-readonly"
    sh("docker", "rm", "-f", name, check=False)
    locked = ["--read-only", "--tmpfs", "/tmp", "-v", f"{name}-data:/data", "--user", "10001",
              "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]  # fmt: skip
    key = sh("docker", "run", "--rm", *locked, IMAGE, "keys", "create", "--name", "admin",
             "--admin").stdout.strip()  # fmt: skip
    sh("docker", "run", "-d", "--name", name, *locked, "-p", "127.0.0.1:8001:8000", IMAGE)
    try:
        healthy = wait_healthy(name)
        base = "http://127.0.0.1:8001"
        refused = httpx.get(f"{base}/v1/models", timeout=30).status_code
        assert refused == 401, refused
        answer = chat(base, "default", key)
        checked = f"healthy; no key 401; the admin key's chat answered {answer[:30]!r}"
        rows.append(["read-only root, no capabilities, uid 10001", f"{healthy:.0f} s", checked])
    finally:
        sh("docker", "rm", "-f", name, check=False)
        sh("docker", "volume", "rm", f"{name}-data", check=False)


def main() -> None:
    if sh("docker", "info", check=False).returncode != 0:
        raise SystemExit("containers: no Docker engine answers (docker info): not run")
    seconds, size = build()
    built = "docker build" + (" (its layers cached)" if seconds < 60 else "")
    rows: list[list[object]] = [[built, f"{seconds:.0f} s", f"image {size:.2f} GB"]]
    run_compose(rows)
    run_read_only(rows)
    build_args = os.environ.get("OCAK_BUILD_ARGS", "") or "none"
    docker = sh("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()
    body = (
        header("make containers", "ocak")
        + f"Build arguments: `{build_args}`; Docker {docker}; Prometheus image "
        + f"`{prometheus_image() or 'none'}`\n\n"
        + table(["step", "time", "what was checked"], rows)
        + "\n\nNot run: Grafana"
        + ("" if prometheus_image() else " and Prometheus")
        + " (images from Docker Hub), a Kubernetes cluster."
    )
    write_section("containers", "Containers: the image built and run", body)
    print(body)


if __name__ == "__main__":
    main()
