"""The prompt store: versions, labels, idempotent create, render, export/import, diff, reopen."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ocak.errors import InvalidRequest, NotFound
from ocak.prompts.render import Message
from ocak.prompts.store import PromptNotFound, PromptStore

SYSTEM = {"role": "system", "content": "You are {{ persona }}.\nBe brief."}
VARS = {"persona": {"type": "string", "default": "helpful"}}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The registry in a SQLite file, and in a real PostgreSQL (``database_url``)."""
    url = request.getfixturevalue("pg_server").database() if request.param == "postgres" else None
    with PromptStore(tmp_path / "prompts.db", url) as s:
        yield s


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def seed(store: PromptStore) -> None:
    """greet at versions 1..3 (prod on 2), summary at version 1."""
    store.create("greet", [SYSTEM, user("Hi")], VARS, model="qwen", description="Greeter")
    store.create("greet", [SYSTEM, user("Hello")], VARS, model="qwen", params={"temperature": 0.2})
    store.create("greet", [SYSTEM, user("Hey {{ persona }}")], VARS, note="third")
    store.label("greet", "prod", 2)
    store.create("summary", [user("Summarise: {{ text }}")], {"text": None})


def test_versions_increment_and_are_immutable(store: PromptStore) -> None:
    v1 = store.create("greet", [SYSTEM, user("Hi")], VARS, model="qwen", description="Greeter")
    v2 = store.create("greet", [SYSTEM, user("Hello")], VARS)
    assert (v1.version, v2.version) == (1, 2)
    assert store.get("greet", version=1) == v1
    assert store.get("greet") == v2 == store.get("greet", label="latest")
    assert [v.version for v in store.versions("greet")] == [1, 2]
    assert v1.messages[1] == Message("user", "Hi") and v1.model == "qwen"
    assert not hasattr(store, "update")
    with pytest.raises(AttributeError):
        v1.version = 5  # type: ignore[misc]
    [info] = store.list()
    assert (info.id, info.description, info.latest, info.labels) == ("greet", "Greeter", 2, {})


def test_identical_create_is_idempotent(store: PromptStore) -> None:
    v1 = store.create("greet", [SYSTEM], VARS, params={"max_tokens": 64})
    again = store.create("greet", [dict(SYSTEM)], dict(VARS), params={"max_tokens": 64}, note="x")
    assert again == v1 and len(store.versions("greet")) == 1
    assert store.create("greet", [SYSTEM], VARS, params={"max_tokens": 65}).version == 2
    assert store.create("greet", [SYSTEM], VARS).version == 3
    assert store.create("greet", [SYSTEM], VARS, params={"max_tokens": 64}).version == 4


def test_label_moves_and_get_follows(store: PromptStore) -> None:
    seed(store)
    assert store.get("greet", label="prod").version == 2
    store.label("greet", "prod", 3)
    store.label("greet", "staging", 1)
    assert store.get("greet", label="prod").version == 3
    assert store.labels("greet") == {"prod": 3, "staging": 1}
    assert {i.id: i.labels for i in store.list()}["greet"] == {"prod": 3, "staging": 1}
    with pytest.raises(PromptNotFound):
        store.label("greet", "prod", 9)
    for bad in ("latest", "Prod", "1x", "a" * 33):
        with pytest.raises(InvalidRequest) as info:
            store.label("greet", bad, 1)
        assert info.value.param == "label"


def test_not_found(store: PromptStore) -> None:
    seed(store)
    for kwargs in ({}, {"version": 1}, {"label": "prod"}):
        with pytest.raises(PromptNotFound):
            store.get("nope", **kwargs)
    for kwargs in ({"version": 4}, {"version": 0}, {"label": "beta"}):
        with pytest.raises(PromptNotFound) as info:
            store.get("greet", **kwargs)
        assert isinstance(info.value, NotFound)
        assert (info.value.code, info.value.param, info.value.status) == (
            "prompt_not_found",
            "prompt",
            404,
        )
    with pytest.raises(PromptNotFound):
        store.versions("nope")
    with pytest.raises(InvalidRequest):
        store.get("greet", version=1, label="prod")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"prompt_id": "Greet"}, "prompt"),
        ({"prompt_id": "-greet"}, "prompt"),
        ({"messages": [SYSTEM, user("{% if %}")]}, "messages.[1].content"),
        ({"messages": [user("{{ stranger }}")]}, "messages.[0].content"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.[0].role"),
        ({"params": {"temperature": "hot"}}, "params.temperature"),
        ({"params": {"max_tokens": 0}}, "params.max_tokens"),
        ({"model": ""}, "model"),
    ],
)
def test_create_refuses(store: PromptStore, kwargs: dict[str, Any], param: str) -> None:
    args: dict[str, Any] = {"prompt_id": "greet", "messages": [SYSTEM], "variables": VARS}
    with pytest.raises(InvalidRequest) as info:
        store.create(**(args | kwargs))
    assert info.value.param == param
    assert store.list() == []


def test_render(store: PromptStore) -> None:
    seed(store)
    out = store.render("greet", {"persona": "a pirate"}, label="prod")
    assert (out.prompt, out.version, out.model) == ("greet", 2, "qwen")
    assert out.params == {"temperature": 0.2}
    assert out.chat_messages() == [
        {"role": "system", "content": "You are a pirate.\nBe brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert store.render("greet").messages[1].content == "Hey helpful"
    with pytest.raises(InvalidRequest) as info:
        store.render("summary", {})
    assert info.value.param == "prompt.variables.text"
    with pytest.raises(InvalidRequest) as info:
        store.render("greet", {"persona": 1})
    assert info.value.param == "prompt.variables.persona"
    store.create("evil", [user("{{ ''.__class__ }}")])
    with pytest.raises(InvalidRequest):
        store.render("evil")


def test_export_import_round_trips(store: PromptStore, tmp_path: Path) -> None:
    seed(store)
    data = store.export()
    assert [p["id"] for p in data["prompts"]] == ["greet", "summary"]
    with PromptStore(tmp_path / "other.db") as other:
        result = other.import_(copy.deepcopy(data))
        assert (result.prompts_created, result.versions_added, result.labels_set) == (2, 4, 1)
        assert other.export() == data
        assert other.versions("greet") == store.versions("greet")
        assert other.labels("greet") == {"prod": 2}
        assert other.get("greet", label="prod").sha256 == store.get("greet", version=2).sha256
        again = other.import_(data)
        assert (again.prompts_created, again.versions_added, again.labels_set) == (0, 0, 0)
        assert again.versions_unchanged == 4
        assert other.export() == data
    only = store.export(["summary"])
    assert [p["id"] for p in only["prompts"]] == ["summary"]
    with pytest.raises(PromptNotFound):
        store.export(["nope"])


def test_import_appends_missing_versions(store: PromptStore, tmp_path: Path) -> None:
    seed(store)
    data = store.export()
    with PromptStore(tmp_path / "other.db") as other:
        other.create("greet", [SYSTEM, user("Hi")], VARS, model="qwen")  # == greet@1
        result = other.import_(data)
        assert result.versions_added == 3 and result.versions_unchanged == 1
        assert result.added == (("greet", 2), ("greet", 3), ("summary", 1))
        assert [v.sha256 for v in other.versions("greet")] == [
            v.sha256 for v in store.versions("greet")
        ]


def test_conflicting_import_changes_nothing(store: PromptStore, tmp_path: Path) -> None:
    seed(store)
    data = store.export()
    with PromptStore(tmp_path / "other.db") as other:
        other.create("aaa", [user("first")])
        other.create("greet", [SYSTEM, user("Hi")], VARS, model="qwen")
        other.create("greet", [user("something else")])  # greet@2 differs
        before = other.export()
        data["prompts"].insert(0, {"id": "aaa", "versions": before["prompts"][0]["versions"]})
        new = {"version": 1, "messages": [SYSTEM], "variables": VARS}
        data["prompts"].insert(1, {"id": "new", "versions": [new], "labels": {"prod": 1}})
        with pytest.raises(InvalidRequest) as info:
            other.import_(data)
        assert "Conflict" in info.value.message
        assert info.value.param == "prompts.[2].versions.[1]"
        assert other.export() == before  # "new" was not created either


def test_bad_import_in_the_middle_changes_nothing(store: PromptStore, tmp_path: Path) -> None:
    seed(store)
    data = store.export()
    data["prompts"][1]["versions"][0]["messages"][0]["content"] = "{{ broken"
    tampered = store.export()
    tampered["prompts"][1]["versions"][0]["messages"][0]["content"] = "tampered {{ text }}"
    with PromptStore(tmp_path / "other.db") as other:
        for bad, param in (
            (data, "prompts.[1].versions.[0].messages.[0].content"),
            (tampered, "prompts.[1].versions.[0].sha256"),
        ):
            with pytest.raises(InvalidRequest) as info:
                other.import_(bad)
            assert info.value.param == param
        assert other.list() == []


def test_diff_shows_the_changed_line(store: PromptStore) -> None:
    seed(store)
    diff = store.diff("greet", 1, 2)
    assert diff.startswith("--- greet@1\n+++ greet@2\n")
    lines = diff.splitlines()
    assert "-  content: Hi" in lines and "+  content: Hello" in lines
    assert "+  temperature: 0.2" in lines
    assert store.diff("greet", 2, 2) == ""
    assert "  content: |-" in store.diff("greet", 1, 3)  # multi-line content stays readable


def test_reopens_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "prompts.db"
    with PromptStore(path) as first:
        seed(first)
        data = first.export()
    with PromptStore(path) as again:
        assert again.export() == data
        assert again.get("greet", label="prod").version == 2
        assert again.create("greet", [SYSTEM, user("Hey {{ persona }}")], VARS).version == 3
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
