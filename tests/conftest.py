"""Shared fixtures: one real ocak server per engine for the session.

The API tests (``test_api_*``) and the CTranslate2 tests (``test_ct2_*``) run
once per engine: llama.cpp on the embedded GGUF, and CTranslate2 on the same
model converted from that GGUF (once, cached under .pytest_cache). A test that
needs what only some engines support says so with ``@pytest.mark.engines(...)``
(the README's support table); other tests get the llama.cpp server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from ct2_helpers import convert_default_model
from helpers import ServerProcess

ENGINES = ("llama.cpp", "ctranslate2")
ENGINE_MODULES = ("test_api_", "test_ct2_")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): run this engine-parametrized test only on these engines"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "engine" not in metafunc.fixturenames or not module.startswith(ENGINE_MODULES):
        return
    marker = metafunc.definition.get_closest_marker("engines")
    wanted = [e for e in ENGINES if marker is None or e in marker.args]
    metafunc.parametrize("engine", wanted, scope="session")


@pytest.fixture(scope="session")
def engine() -> str:
    """The engine behind ``server`` outside the engine-parametrized modules."""
    return "llama.cpp"


@pytest.fixture(scope="session")
def ct2_model(pytestconfig: pytest.Config) -> Path:
    """The default model converted to CTranslate2 int8 (cached across sessions)."""
    return convert_default_model(pytestconfig.cache.mkdir("ocak-ct2"))


@pytest.fixture(scope="session")
def server(
    engine: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    """``ocak serve`` on the default model with ``engine``, over real HTTP on loopback."""
    data = tmp_path_factory.mktemp("ocak-data")
    model: list[str] = []
    if engine == "ctranslate2":
        model = ["--model", f"default={request.getfixturevalue('ct2_model')}"]
    proc = ServerProcess(
        ["--parallel", "16", "--ctx-size", "1024", "--max-queue", "4", *model],
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
