"""Knowledge bases on a real ``ocak serve`` with the bundled embedder: ``ocak kb`` on the
command line, ``/v1/knowledge`` over HTTP (uploads reported file by file), hybrid search
naming the right source, and retrieval into chat requests (by the request's
``knowledge`` field or an alias's), with the prompt's cached prefix still reused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from helpers import ServerProcess
from keys_helpers import ocak

pytestmark = pytest.mark.slow

OAKVALE = """# Oakvale

Oakvale is a village on the river Wend, two days north of the capital.

## The founding

Oakvale was founded by the smith Harla Ironhand in the year of the red comet. She forged
the first bell of the village from the iron of a fallen star.

## Trade

The village sells river pearls and oak barrels at the spring fair.
"""
BEASTS = """<html><head><style>h1 {color: red}</style></head><body>
<h1>Beasts of the north</h1>
<p>The grey wyrm sleeps under Mount Kell and wakes once every hundred winters.</p>
<script>var secret = "never indexed";</script>
<h2>Wolves</h2><p>Frost wolves hunt in packs of seven along the Wend.</p>
</body></html>"""
CONFIG = """
models:
  sage: {targets: [{local: default}], knowledge: [lore]}
"""
SYSTEM = (
    "You are the archivist of Oakvale. You answer questions about the village, its people, "
    "its history, its trade and the beasts of the north in one or two short sentences, "
    "plainly, without inventing names, and you say when you do not know."
)


@dataclass
class Setup:
    server: ServerProcess
    data: Path
    client: openai.OpenAI


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data = tmp_path_factory.mktemp("knowledge")
    docs = data / "docs"
    (docs / "north").mkdir(parents=True)
    (docs / "oakvale.md").write_text(OAKVALE)
    (docs / "north" / "beasts.html").write_text(BEASTS)
    (docs / "north" / "empty.txt").write_text("")
    assert ocak(data, "kb", "create", "lore").stdout.startswith("lore (all-minilm-l6-v2, 384")
    added = ocak(data, "kb", "add", "lore", str(docs)).stdout
    assert "added oakvale.md: 3 chunks" in added, added
    assert "added north/beasts.html" in added and "skipped north/empty.txt" in added, added
    again = ocak(data, "kb", "add", "lore", str(docs / "oakvale.md")).stdout
    assert "unchanged oakvale.md" in again and "0 embedded" in again
    (data / "ocak.yaml").write_text(CONFIG)
    server = ServerProcess(
        ["--config", str(data / "ocak.yaml")],
        env={"OCAK_DATA_DIR": str(data)},
        log_path=data / "server.log",
    )
    try:
        server.wait_ready()
        yield Setup(server, data, openai.OpenAI(base_url=f"{server.url}/v1", api_key="x"))
    finally:
        server.stop()


def test_the_cli_searches_by_meaning_and_lists(setup: Setup) -> None:
    found = ocak(setup.data, "kb", "search", "lore", "Which creature lives under a mountain?")
    first = found.stdout.splitlines()[0]
    assert "north/beasts.html" in first and "Beasts of the north" in first, found.stdout
    listed = ocak(setup.data, "kb", "list").stdout
    assert "lore" in listed and "all-minilm-l6-v2" in listed


def test_documents_are_uploaded_and_reported_file_by_file(setup: Setup) -> None:
    url = setup.server.url
    r = httpx.post(f"{url}/v1/knowledge", json={"name": "uploads"})
    assert r.status_code == 201 and r.json()["dimensions"] == 384
    files = [
        ("files", ("oakvale.md", OAKVALE.encode(), "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")),
        ("files", ("blank.txt", b"   \n", "text/plain")),
    ]
    r = httpx.post(f"{url}/v1/knowledge/uploads/documents", files=files, timeout=120)
    assert r.status_code == 200, r.text
    results = {x["source"]: x for x in r.json()["results"]}
    assert results["oakvale.md"]["status"] == "added" and results["oakvale.md"]["chunks"] == 3
    assert results["broken.pdf"]["status"] == "skipped"
    assert "broken.pdf" in results["broken.pdf"]["error"]["error"]["message"]
    assert results["blank.txt"]["status"] == "skipped"
    assert r.json()["knowledge_base"]["documents"] == 1
    r = httpx.post(
        f"{url}/v1/knowledge/uploads/search", json={"query": "Who forged the first bell?"}
    )
    best = r.json()["data"][0]
    assert best["source"] == "oakvale.md" and best["heading"] == "Oakvale > The founding"
    assert "Harla Ironhand" in best["text"]
    r = httpx.post(
        f"{url}/v1/knowledge/uploads/search", json={"query": "pearls", "mode": "keyword"}
    )
    assert r.json()["data"][0]["heading"] == "Oakvale > Trade"
    assert httpx.delete(f"{url}/v1/knowledge/uploads/documents/oakvale.md").status_code == 200
    assert httpx.get(f"{url}/v1/knowledge/uploads").json()["documents"] == 0
    assert httpx.delete(f"{url}/v1/knowledge/uploads").json()["deleted"] is True
    r = httpx.get(f"{url}/v1/knowledge/uploads")
    assert r.status_code == 404 and r.json()["error"]["code"] == "kb_not_found"


def used(r: Any) -> list[dict[str, Any]]:
    return list(json.loads(r.headers["x-ocak-knowledge"]))


def test_a_chat_answered_from_a_knowledge_base_names_its_source(setup: Setup) -> None:
    question = [{"role": "user", "content": "Who founded Oakvale?"}]
    r = setup.client.chat.completions.with_raw_response.create(
        model="default",
        messages=question,
        max_tokens=24,
        temperature=0,
        extra_body={"knowledge": {"bases": ["lore"], "k": 2}},
    )
    chunks = used(r)
    assert len(chunks) == 2 and chunks[0]["source"] == "oakvale.md", chunks
    assert chunks[0]["heading"] == "Oakvale > The founding"
    reply = r.parse()
    assert reply.model_extra and reply.model_extra["knowledge"] == chunks
    # the prompt held the chunk: the 135M model repeats the founder's name from it
    assert "Harla" in (reply.choices[0].message.content or ""), reply.choices[0].message
    stream = setup.client.chat.completions.with_raw_response.create(
        model="sage", messages=question, max_tokens=8, stream=True
    )  # the alias names the knowledge base itself
    assert used(stream)[0]["source"] == "oakvale.md"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)


def test_retrieved_text_leaves_the_cached_prefix_in_place(setup: Setup) -> None:
    def ask(question: str) -> Any:
        return setup.client.chat.completions.create(
            model="sage",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
        )

    ask("When is the spring fair?")
    second = ask("What sleeps under Mount Kell?")
    details = second.usage.prompt_tokens_details if second.usage else None
    cached = details.cached_tokens if details else 0
    assert cached is not None and cached >= 40, second.usage  # the system prompt, reused


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"knowledge": ["nope"]}, 404, "name"),
        ("/v1/chat/completions", {"knowledge": "lore"}, 400, "knowledge"),
        ("/v1/chat/completions", {"knowledge": {"bases": ["lore"], "k": 0}}, 400, "knowledge.k"),
        ("/v1/completions", {"prompt": "x", "knowledge": ["lore"]}, 400, "knowledge"),
    ],
)
def test_bad_knowledge_fields_are_clear_errors(
    setup: Setup, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    full = {"model": "default", "messages": [{"role": "user", "content": "hi"}], **body}
    if "prompt" in body:
        full.pop("messages")
    r = httpx.post(f"{setup.server.url}{path}", json=full, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_a_character_recalls_a_fact_no_lorebook_key_mentions(setup: Setup) -> None:
    """The card's lorebook knows only of dragons; its knowledge base knows the founder."""
    card = {
        "id": "archivist",
        "name": "Wend",
        "persona": "Wend, the archivist of Oakvale, who answers questions about its history.",
        "knowledge_bases": ["lore"],
        "lorebook": {"entries": [{"name": "Dragons", "keys": ["dragon"], "content": "None."}]},
        "temperature": 0.0,
    }
    url = setup.server.url
    assert httpx.post(f"{url}/v1/characters", json=card).status_code == 201
    r = httpx.post(
        f"{url}/v1/sessions", json={"player_id": "p", "characters": ["archivist"], "greet": False}
    )
    sid = r.json()["id"]
    r = httpx.post(
        f"{url}/v1/sessions/{sid}/messages", json={"text": "Who founded Oakvale?"}, timeout=120
    )
    assert r.status_code == 200, r.text
    turn = r.json()
    assert "lore/oakvale.md" in turn["lore"] and "Dragons" not in turn["lore"], turn["lore"]
    assert "Harla" in turn["text"], turn["text"]


def test_a_character_recalls_an_old_line_by_meaning_with_no_word_in_common(
    setup: Setup,
) -> None:
    """Full-text recall finds no word of "jewellery" in "silver ring": the search by meaning
    brings that line back from an earlier session, over the other lines of it."""
    url = setup.server.url
    card = {"id": "keeper", "name": "Mira", "persona": "Mira keeps the inn.", "temperature": 0.0}
    assert httpx.post(f"{url}/v1/characters", json=card).status_code == 201

    def session() -> str:
        body = {"player_id": "ada", "characters": ["keeper"], "greet": False}
        return str(httpx.post(f"{url}/v1/sessions", json=body).json()["id"])

    first = session()
    lines = [
        "The weather has been cold and grey all week.",
        "Your bread smells wonderful this morning.",
        "I lost my silver ring by the old well.",
        "The horses in the stable look tired.",
    ]
    for line in lines:
        r = httpx.post(f"{url}/v1/sessions/{first}/messages", json={"text": line}, timeout=120)
        assert r.status_code == 200, r.text
    r = httpx.post(
        f"{url}/v1/sessions/{session()}/messages",
        json={"text": "Has anyone handed in my jewellery?"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    memories = r.json()["memories"]
    assert any("silver ring" in m for m in memories), memories
