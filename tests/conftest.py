"""Shared fixtures: one real ocak server on the default model for the session."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from helpers import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``ocak serve`` on the embedded default model, over real HTTP on loopback."""
    data = tmp_path_factory.mktemp("ocak-data")
    proc = ServerProcess(
        ["--parallel", "16", "--ctx-size", "1024", "--max-queue", "4"],
        env={"OCAK_DATA_DIR": str(data)},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> openai.OpenAI:
    """The official OpenAI client, pointed at ocak by base_url alone."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
