"""Schema-based fuzzing: schemathesis sends what ocak's own OpenAPI document allows, and
what it forbids, to a real server on the default model. No input may cause a server
error, and every refusal must be an OpenAI-shaped error.

Bounded: ``MAX_EXAMPLES`` per operation and mode (derandomized: the same inputs each
run), and answers capped at ``MAX_TOKENS`` by the server's ``--max-tokens-limit`` so
each example is quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from helpers import ServerProcess, running
from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.errors import InvalidRequest
from ocak.server.app import create_app
from ocak.server.shapes import error_body_for

MAX_EXAMPLES = 20
MAX_TOKENS = 4


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("ocak-fuzz")
    with running(
        [
            "--ctx-size", "512",
            "--parallel", "4",
            "--max-tokens-limit", str(MAX_TOKENS),
            "--max-messages", "32",
            "--max-body-bytes", "65536",
        ],
        env={"OCAK_DATA_DIR": str(data)},
    ) as proc:  # fmt: skip
        yield proc


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
    )
    return schema


def document_operations() -> list[tuple[str, str, bool]]:
    """(method, path, can be negated) of every operation in ocak's OpenAPI document.

    Read from the app built in-process (no model needed), so a new route is fuzzed
    without editing this file.
    """
    app = create_app(Settings(), EngineRegistry([FakeEngine("default")]))
    return [
        (method.upper(), path, negatable(op))
        for path, operations in app.openapi()["paths"].items()
        for method, op in operations.items()
    ]


def negatable(operation: dict[str, Any]) -> bool:
    """A body or a query parameter can be made invalid; a bare path string cannot."""
    params = operation.get("parameters") or []
    return bool(operation.get("requestBody")) or any(p.get("in") != "path" for p in params)


# Negative data needs something to break.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, negative in document_operations()
    for mode in (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if negative
        else [GenerationMode.POSITIVE]
    )
]


def openai_shaped_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx from ocak is in its API's own error shape (OpenAI's ``{"error": {message,
    type, param, code}}``, Ollama's, KoboldCpp's...: ``server.shapes``) without a trace."""
    if response.status_code < 400 or case.path == "/health":  # /health's 503 is its own shape
        return None
    if case.method.upper() == "HEAD":  # no body to read
        return None
    body = response.json()
    expected = error_body_for(case.path)(InvalidRequest("x", param="p"))
    assert set(body) == set(expected), body
    for key, value in expected.items():
        if isinstance(value, dict):
            assert set(body[key]) <= set(value) | {"param"}, body
    assert "Traceback" not in response.text
    return None


def served_model(drawn: tuple[Any, int]) -> Any:
    """Most valid bodies name the served model and ask for no more tokens than the cap."""
    case, n = drawn
    body = case.body
    if n != 3 and isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = "default"
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(name), int) and body[name] > MAX_TOKENS:
                body[name] = MAX_TOKENS
    return case


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_input_causes_a_server_error(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE and method == "POST":
        # Random model names all end in 404; most valid bodies should reach the model.
        strategy = st.tuples(strategy, st.integers(0, 3)).map(served_model)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(checks=[not_a_server_error, openai_shaped_errors], timeout=60)

    fuzz()
