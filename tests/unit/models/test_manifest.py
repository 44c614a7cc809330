"""Model names and the store's folder names; which GGUF a reference picks; the store's
listing, staging and atomic commit (no half model is ever listed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocak.errors import InvalidRequest, ModelNotFound
from ocak.models.hub import HubRef, PullError, RemoteFile, choose_gguf, parse_ref
from ocak.models.manifest import Manifest, check_name, describe_files, folder_name
from ocak.models.store import ModelStore, StoreBusy, available, resolve


def test_names_clients_use_and_the_folders_they_are_stored_in() -> None:
    for name in ("default", "owner/repo", "owner/repo:Q4_K_M", "a.b+c-d/e_f:x.gguf"):
        assert check_name(name) == name
    for bad in ("", "/repo", "a/b/c", "a:b:c", "../x", "a b", "owner/", "x" * 201):
        with pytest.raises(InvalidRequest):
            check_name(bad)
    assert folder_name("plain-name.1") == "plain-name.1"  # unchanged when already portable
    stored = folder_name("owner/repo:Q4_K_M")
    assert stored.startswith("owner--repo--Q4_K_M-") and ":" not in stored and "/" not in stored
    assert folder_name("owner/repo:Q4") != folder_name("owner--repo--Q4")  # kept apart
    assert folder_name("con").lower() != "con"  # Windows reserves it


def test_references_parse_from_names_and_hub_urls() -> None:
    assert parse_ref("o/r") == HubRef("o/r")
    assert parse_ref("o/r:Q8_0").name == "o/r:Q8_0"
    assert parse_ref("https://huggingface.co/o/r").repo == "o/r"
    assert parse_ref("hf.co/o/r:f.gguf", revision="v2") == HubRef("o/r", "f.gguf", "v2")
    for bad in ("repo", "a/b/c", "o/r:", "o/r:a:b"):
        with pytest.raises(InvalidRequest):
            parse_ref(bad)


def _files(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(p, 10, "0" * 64, None) for p in paths]


def test_a_tag_picks_one_quantization_with_all_its_shards() -> None:
    files = _files(
        "m-Q4_K_M.gguf",
        "m-Q8_0-00002-of-00002.gguf",
        "m-Q8_0-00001-of-00002.gguf",
        "mmproj-m-f16.gguf",
        "sub/m-Q4_0.gguf",
    )
    assert [f.path for f in choose_gguf(HubRef("o/r", "q4_k_m"), files)] == ["m-Q4_K_M.gguf"]
    assert [f.path for f in choose_gguf(HubRef("o/r", "Q8_0"), files)] == [
        "m-Q8_0-00001-of-00002.gguf",
        "m-Q8_0-00002-of-00002.gguf",
    ]
    assert [f.path for f in choose_gguf(HubRef("o/r", "m-Q4_0.gguf"), files)] == ["sub/m-Q4_0.gguf"]
    # No tag: the usual default when there are several; the vision projector is never it.
    assert [f.path for f in choose_gguf(HubRef("o/r"), files)] == ["m-Q4_K_M.gguf"]
    with pytest.raises(PullError, match=r"Q4_K_M.*Q8_0"):
        choose_gguf(HubRef("o/r", "Q2_K"), files)
    with pytest.raises(PullError, match="pick one"):
        choose_gguf(HubRef("o/r"), _files("a-Q5_K_S.gguf", "a-Q6_K.gguf"))
    assert len(choose_gguf(HubRef("o/r"), _files("only.gguf"))) == 1


def _stage(store: ModelStore, name: str, payload: bytes) -> Manifest:
    with store.staging(name) as folder:
        (folder / "model.gguf").write_bytes(payload)
        manifest = Manifest(name=name, engine="llama.cpp", entry="model.gguf")
        manifest.files = describe_files(folder)
        store.commit(folder, manifest)
    return manifest


def test_the_store_lists_only_committed_models_and_removes_them(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / "old.gguf").write_bytes(b"GGUF")  # stored before manifests: still served
    with pytest.raises(RuntimeError), store.staging("o/r:Q4") as folder:
        (folder / "model.gguf").write_bytes(b"half")
        assert [m.name for m in store.models()] == ["old"]  # nothing half-made is listed
        raise RuntimeError("killed")
    assert store.partials() == []  # removed on failure (a pull keeps it to resume)
    manifest = _stage(store, "o/r:Q4", b"GGUF v3")
    assert manifest.files[0].size == 7 and len(manifest.files[0].sha256) == 64
    assert sorted(m.name for m in store.models()) == ["o/r:Q4", "old"]
    spec = resolve("o/r:Q4", tmp_path)
    assert spec.id == "o/r:Q4" and spec.path.read_bytes() == b"GGUF v3"
    assert spec.engine == "llama.cpp" and spec.kind == "chat"
    assert resolve("mine=o/r:Q4", tmp_path).id == "mine"
    assert "o/r:Q4" in [s.id for s in available(tmp_path)]
    _stage(store, "o/r:Q4", b"GGUF v4")  # a new version replaces the old one
    assert store.get("o/r:Q4").path.read_bytes() == b"GGUF v4"
    store.remove("o/r:Q4")
    store.remove("old")
    assert store.models() == [] and [p.name for p in tmp_path.iterdir()] == [".staging"]
    with pytest.raises(ModelNotFound):
        store.remove("o/r:Q4")


def test_one_pull_of_a_name_at_a_time(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with store.staging("o/r"), pytest.raises(StoreBusy), store.staging("o/r"):
        pass
    with store.staging("o/r"):  # free again
        pass
