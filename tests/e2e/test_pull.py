"""``ocak models pull`` against a local stand-in for the Hugging Face Hub (real HTTP,
the real ``huggingface_hub`` client) serving the bundled GGUF: a pull, an up-to-date
second pull, a connection cut past 10 MiB (resumed with a Range request), a pull killed
mid-file and resumed by the next run, a corrupt file refused, a missing repo, no network;
then ``show`` and ``rm``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app_helpers import run_app
from helpers import free_port, wait_until
from hub_stub import HubFile, HubRepo, HubStub
from ocak.errors import ModelNotFound, Unavailable
from ocak.models.hub import ChecksumMismatch, Hub, parse_ref, pull
from ocak.models.store import STAGING, ModelStore, default_model_path, resolve
from ocak.store.db import open_database
from ocak.store.keys import create_key

GGUF = default_model_path()
FILE = GGUF.name  # SmolLM2-135M-Instruct.Q4_1.gguf
REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
MIB = 1 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


SHA = sha256(GGUF)


def repo() -> HubRepo:
    return HubRepo(
        REPO,
        {
            FILE: HubFile(FILE, source=GGUF),
            "README.md": HubFile("README.md", data=b"# SmolLM2\n", lfs=False),
        },
        license="apache-2.0",
    )


@pytest.fixture()
def hub() -> Iterator[HubStub]:
    with HubStub(repo()) as stub:
        yield stub


def cli(data: Path, hub_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCAK_DATA_DIR": str(data), "HF_ENDPOINT": hub_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ocak", "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_pull_stores_a_verified_model_with_its_manifest(hub: HubStub, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    steps: list[str] = []
    manifest = pull(
        parse_ref(f"{REPO}:Q4_1"), store, Hub(hub.url), report=lambda p: steps.append(p.stage)
    )
    assert manifest.name == f"{REPO}:Q4_1" and manifest.engine == "llama.cpp"
    assert manifest.source is not None and manifest.source.revision == repo().sha
    assert manifest.license == "apache-2.0" and manifest.kind == "chat"
    assert [(f.path, f.sha256) for f in manifest.files] == [(FILE, SHA)]
    spec = resolve(f"{REPO}:Q4_1", tmp_path)  # servable by the name it was pulled as
    assert spec.path.name == FILE and sha256(spec.path) == SHA
    assert steps[0] == "resolving" and "downloading" in steps and steps[-1] == "success"
    # Only the chosen file was fetched (not the README), and the store holds nothing else.
    assert [
        h.path.rsplit("/", 1)[-1] for h in hub.hits if h.method == "GET" and "resolve" in h.path
    ] == [FILE]
    assert {p.name for p in tmp_path.iterdir()} == {STAGING, spec.path.parent.name}
    assert store.partials() == []
    # A second pull finds the same commit and downloads nothing.
    before = len(hub.downloads(FILE))
    again = pull(parse_ref(f"{REPO}:Q4_1"), store, Hub(hub.url))
    assert again.created == manifest.created and len(hub.downloads(FILE)) == before


def test_a_cut_connection_resumes_with_a_range_request(hub: HubStub, tmp_path: Path) -> None:
    hub.cut_after = 15 * MIB
    manifest = pull(parse_ref(REPO), ModelStore(tmp_path), Hub(hub.url))
    ranges = [h.range for h in hub.downloads(FILE)]
    assert ranges[0] is None and len(ranges) == 2, ranges
    assert (
        ranges[1] is not None and 10 * MIB <= int(ranges[1].split("=")[1].split("-")[0]) <= 15 * MIB
    )
    assert manifest.files[0].sha256 == SHA and sha256(resolve(REPO, tmp_path).path) == SHA


def test_a_killed_pull_leaves_no_model_and_the_next_run_resumes(
    hub: HubStub, tmp_path: Path
) -> None:
    hub.hang_after = 40 * MIB
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocak", "models", "pull", REPO],
        env={**os.environ, "OCAK_DATA_DIR": str(tmp_path), "HF_ENDPOINT": hub.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = tmp_path / "models" / STAGING

    def partial_bytes() -> int:
        return sum(f.stat().st_size for f in staging.rglob("*.part")) if staging.exists() else 0

    try:
        assert wait_until(lambda: partial_bytes() >= 30 * MIB, timeout=60), partial_bytes()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    have = partial_bytes()
    listed = cli(tmp_path, hub.url, "list")
    assert REPO not in listed.stdout and "unfinished pulls" in listed.stderr
    hub.hang_after = None
    done = cli(tmp_path, hub.url, "pull", REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == REPO
    resumed = hub.downloads(FILE)[-1].range
    assert resumed is not None and int(resumed.split("=")[1].split("-")[0]) == have
    assert sha256(resolve(REPO, tmp_path / "models").path) == SHA
    assert ModelStore(tmp_path / "models").partials() == []


def test_a_corrupt_file_is_refused_and_removed(hub: HubStub, tmp_path: Path) -> None:
    hub.corrupt.add(FILE)
    store = ModelStore(tmp_path)
    with pytest.raises(ChecksumMismatch, match="corrupted"):
        pull(parse_ref(REPO), store, Hub(hub.url))
    assert store.models() == []
    leftovers = [p for p in (tmp_path / STAGING).rglob("*") if p.is_file() and p.name == FILE]
    assert leftovers == []  # the bad bytes are gone, not kept under the right name
    hub.corrupt.clear()
    assert pull(parse_ref(REPO), store, Hub(hub.url)).files[0].sha256 == SHA


def test_a_missing_repo_and_no_network_are_clear_errors(hub: HubStub, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no repository 'test-org/nope'"):
        pull(parse_ref("test-org/nope"), ModelStore(tmp_path), Hub(hub.url))
    down = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Unavailable, match="cannot reach"):
        pull(parse_ref(REPO), ModelStore(tmp_path), Hub(down))
    assert time.monotonic() - started < 30
    result = cli(tmp_path, hub.url, "pull", "test-org/nope")
    assert result.returncode == 1 and "no repository 'test-org/nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_show_and_rm(hub: HubStub, tmp_path: Path) -> None:
    assert cli(tmp_path, hub.url, "pull", f"{REPO}:Q4_1").returncode == 0
    shown = cli(tmp_path, hub.url, "show", f"{REPO}:Q4_1")
    assert shown.returncode == 0, shown.stderr
    for fact in ("llama", "Q4_1", "8192", "apache-2.0", REPO, "<|im_start|>"):
        assert fact in shown.stdout, (fact, shown.stdout)
    listed = cli(tmp_path, hub.url, "list")
    assert f"{REPO}:Q4_1" in listed.stdout
    removed = cli(tmp_path, hub.url, "rm", f"{REPO}:Q4_1")
    assert removed.returncode == 0 and f"{REPO}:Q4_1" not in cli(tmp_path, hub.url, "list").stdout
    missing = cli(tmp_path, hub.url, "rm", f"{REPO}:Q4_1")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_pull_over_http_streams_progress_and_needs_an_administrator(
    hub: HubStub, tmp_path: Path
) -> None:
    name = f"{REPO}:Q4_1"

    async def admin(c: httpx.AsyncClient) -> None:  # loopback, no keys yet: the operator
        r = await c.post("/v1/models/pull", json={"model": name})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        statuses = [e.get("status") for e in events]
        assert statuses[0] == "resolving" and statuses[-1] == "success", statuses
        assert events[-1]["model"] == name and events[-1]["engine"] == "llama.cpp"
        files = [e for e in events if e.get("status") == "downloading"]
        assert files[-1]["file"] == FILE
        assert files[-1]["completed"] == files[-1]["total"] == GGUF.stat().st_size
        assert resolve(name, tmp_path / "models").path.stat().st_size == GGUF.stat().st_size
        # Failures before the download are the response's own status, in OpenAI's shape.
        r = await c.post("/v1/models/pull", json={"model": "test-org/nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await c.post("/v1/models/pull", json={"model": "no-owner", "stream": False})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = await c.post("/v1/models/pull", json={"model": name, "stream": False})
        assert r.status_code == 200 and r.json()["status"] == "success"  # up to date
        r = await c.delete(f"/v1/models/{name}")
        assert r.json() == {"id": name, "object": "model", "deleted": True}
        r = await c.delete(f"/v1/models/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

    run_app(tmp_path, admin, hf_endpoint=hub.url)
    db = open_database(tmp_path / "ocak.db")
    user, _ = create_key(db, "game")
    db.close()

    async def player(c: httpx.AsyncClient) -> None:
        auth = {"Authorization": f"Bearer {user}"}
        r = await c.post("/v1/models/pull", json={"model": name}, headers=auth)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
        assert (await c.delete(f"/v1/models/{name}", headers=auth)).status_code == 403

    run_app(tmp_path, player, hf_endpoint=hub.url)
    assert len(hub.downloads(FILE)) == 1  # the player's request fetched nothing


def test_ollamas_pull_of_an_hf_co_name_is_the_same_pull(hub: HubStub, tmp_path: Path) -> None:
    """``ollama pull hf.co/OWNER/REPO:QUANT``'s request: NDJSON lines the ollama client
    reads (each validated with its own ProgressResponse), then the model is in the store."""
    import ollama

    name = f"hf.co/{REPO}:Q4_1"

    async def admin(c: httpx.AsyncClient) -> None:
        r = await c.post("/api/pull", json={"model": name})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [ollama.ProgressResponse.model_validate_json(x) for x in r.text.splitlines()]
        assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
        files = [x for x in lines if x.digest == FILE]
        assert files[-1].completed == files[-1].total == GGUF.stat().st_size
        assert resolve(f"{REPO}:Q4_1", tmp_path / "models").path.stat().st_size == files[-1].total
        r = await c.post("/api/pull", json={"model": name, "stream": False})
        assert r.json() == {"status": "success"}  # up to date
        r = await c.post("/api/pull", json={"model": "hf.co/test-org/nope"})
        assert r.status_code == 404 and set(r.json()) == {"error"}  # Ollama's shape

    run_app(tmp_path, admin, hf_endpoint=hub.url)
    assert len(hub.downloads(FILE)) == 1


def test_a_safetensors_checkpoint_is_pulled_and_converted(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the convert extra (installed by `make test`)
    from ct2_helpers import write_tiny_checkpoint

    source = write_tiny_checkpoint(tmp_path / "src", "llama")
    files = {
        f.name: HubFile(f.name, source=f, lfs=f.suffix == ".safetensors")
        for f in sorted(source.iterdir())
        if f.is_file()
    }
    files["generation_config.json"] = HubFile(
        "generation_config.json", data=b'{"temperature": 0.6, "top_p": 0.9}', lfs=False
    )
    with HubStub(HubRepo("test-org/tiny-llama", files)) as stub:
        store = ModelStore(tmp_path / "store")
        stages: list[str] = []
        manifest = pull(
            parse_ref("test-org/tiny-llama"),
            store,
            Hub(stub.url),
            report=lambda p: stages.append(p.stage),
        )
    assert manifest.engine == "ctranslate2" and "converting" in stages
    assert manifest.params == {"temperature": 0.6, "top_p": 0.9}
    spec = resolve("test-org/tiny-llama", tmp_path / "store")
    assert spec.engine == "ctranslate2" and (spec.path / "model.bin").is_file()
    assert not (spec.path / "download").exists()  # the checkpoint itself is not kept
    assert "model.bin" in {f.path for f in manifest.files}
