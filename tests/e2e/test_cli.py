"""The `ocak` command in a terminal-like setting: run, chat, models list, serve errors."""

from __future__ import annotations

import subprocess
import sys


def ocak(
    *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocak", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_streams_an_answer_and_respects_max_tokens() -> None:
    r = ocak("run", "Name a color.", "--temperature", "0", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    again = ocak("run", "Name a color.", "--temperature", "0", "--max-tokens", "12")
    assert again.stdout == r.stdout  # greedy: the same answer


def test_chat_keeps_history_until_reset_and_exits_cleanly() -> None:
    script = "My name is Deniz.\nWhat is my name?\n/reset\n/what\n/exit\n"
    r = ocak("chat", "--temperature", "0", "--max-tokens", "24", stdin=script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(">>> ") == 5
    assert "(conversation cleared)" in r.stderr
    assert "Unknown command /what" in r.stderr


def test_chat_ends_on_end_of_input() -> None:
    r = ocak("chat", "--max-tokens", "4", stdin="hello\n")
    assert r.returncode == 0, r.stderr


def test_models_list_shows_the_embedded_default() -> None:
    r = ocak("models", "list")
    assert r.returncode == 0, r.stderr
    assert "default" in r.stdout
    assert "llama.cpp" in r.stdout


def test_run_with_a_missing_model_file_says_which() -> None:
    r = ocak("run", "hi", "--model", "/nonexistent/model.gguf")
    assert r.returncode != 0
    assert "/nonexistent/model.gguf" in r.stderr
    assert "Traceback" not in r.stderr
