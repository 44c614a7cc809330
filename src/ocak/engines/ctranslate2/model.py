"""A converted CTranslate2 model: the generator, its tokenizer and its chat template.

Serving needs only ``ctranslate2`` and ``tokenizers``: the converter saved
``tokenizer.json``, the chat template and ``ocak.json`` beside ``model.bin``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import ctranslate2
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from ocak.engines.chat_template import ChatTemplate
from ocak.engines.text import check_ids
from ocak.errors import EngineError
from ocak.models.source import read_json_object
from ocak.models.store import ModelFileError

log = logging.getLogger("ocak.ctranslate2")

# CTranslate2 seeds its sampler once per worker thread, from the global seed at that
# moment: seeding a request means starting a worker; this lock keeps seeds apart.
_seed_lock = threading.Lock()
_RANDOM_SEED = 0xFFFFFFFF  # CTranslate2's "draw a seed from random_device"
DECODE_CONTEXT = 4  # prompt tokens fed to a stream decoder so the first piece keeps its space


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return str(value) if isinstance(value, str) else ""


def read_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        template = read_json_object(folder / name).get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates: the default one
            for item in template:
                if isinstance(item, dict) and item.get("name") == "default":
                    return str(item.get("template"))
    return None


class Ct2Model:
    """Weights (in CTranslate2 workers), tokenizer and template of one converted model."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        workers: int = 1,
        threads_per_worker: int = 1,
    ) -> None:
        if not (path / "model.bin").is_file():
            raise ModelFileError(f"{path} is not a CTranslate2 model (no model.bin)")
        if not (path / "tokenizer.json").is_file():
            raise ModelFileError(
                f"{path} has no tokenizer.json: convert it with `ocak models convert`, "
                "which saves the tokenizer beside the model"
            )
        self.path = path
        self.device = device
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.meta = read_json_object(path / "ocak.json")
        ct2_config = read_json_object(path / "config.json")
        tok_config = read_json_object(path / "tokenizer_config.json")
        try:
            self.generator = self._generator(workers)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"CTranslate2 could not load {path}: {exc}") from exc
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.bos_text = _token_text(tok_config.get("bos_token")) or str(
            ct2_config.get("bos_token") or ""
        )
        eos_text = _token_text(tok_config.get("eos_token")) or str(
            ct2_config.get("eos_token") or ""
        )
        self.chat_template = ChatTemplate(
            read_chat_template(path), bos_token=self.bos_text, eos_token=eos_text
        )
        self.end_ids = self._end_ids(eos_text)
        self.end_tokens = [self.tokenizer.id_to_token(i) or "" for i in sorted(self.end_ids)]
        self.bos_id = self.tokenizer.token_to_id(self.bos_text) if self.bos_text else None
        self.context_length = int(self.meta.get("context_length") or 0)
        self.quantization = str(self.meta.get("quantization") or "") or None
        self.size_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        self.add_bos = self._adds_bos()

    def _generator(self, workers: int) -> Any:
        return ctranslate2.Generator(
            str(self.path),
            device=self.device,
            compute_type="default",
            inter_threads=workers,
            intra_threads=self.threads_per_worker,
        )

    def _end_ids(self, eos_text: str) -> set[int]:
        ids: set[int] = set()
        eos = self.tokenizer.token_to_id(eos_text) if eos_text else None
        if eos is not None:
            ids.add(eos)
        gen = read_json_object(self.path / "generation_config.json").get("eos_token_id")
        for value in gen if isinstance(gen, list) else [gen]:
            if isinstance(value, int):
                ids.add(value)
        return ids

    def _adds_bos(self) -> bool:
        if self.bos_id is None:
            return False
        probe = self.tokenizer.encode("a", add_special_tokens=True).ids
        return bool(probe) and probe[0] == self.bos_id

    @property
    def start_token(self) -> int | None:
        """The token an empty prompt starts with (BOS), or None."""
        return self.bos_id

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; special tokens written in the text are parsed as such."""
        add = add_special and not (self.bos_text and text.startswith(self.bos_text))
        return list(self.tokenizer.encode(text, add_special_tokens=add).ids)

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens written out; 400 for an unknown id."""
        check_ids(ids, self.tokenizer.get_vocab_size())
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def token_strings(self, ids: list[int]) -> list[str]:
        """The strings CTranslate2 takes as input (its vocabulary is the tokenizer's)."""
        return [self.tokenizer.id_to_token(i) or "" for i in ids]

    def decoder(self, prompt_ids: list[int]) -> DecodeStream:
        """A UTF-8-safe incremental detokenizer that continues the prompt's text."""
        return DecodeStream(ids=prompt_ids[-DECODE_CONTEXT:], skip_special_tokens=True)

    def seeded_generator(self, seed: int) -> Any:
        """A fresh one-worker generator whose sampler starts from ``seed``.

        The worker thread draws its seed at its first sampling step, so the
        global seed stays set (under a lock) until ``release_seed``.
        """
        _seed_lock.acquire()
        try:
            ctranslate2.set_random_seed(
                seed & 0xFFFFFFFF if seed & 0xFFFFFFFF != _RANDOM_SEED else 0
            )
            return ctranslate2.Generator(
                str(self.path),
                device=self.device,
                compute_type="default",
                inter_threads=1,
                intra_threads=self.threads_per_worker * self.workers,
            )
        except BaseException:
            release_seed()
            raise

    def close(self) -> None:
        generator, self.generator = self.generator, None
        del generator


def release_seed() -> None:
    """Back to random seeds for workers started later; see ``Ct2Model.seeded_generator``."""
    ctranslate2.set_random_seed(_RANDOM_SEED)
    _seed_lock.release()
