"""The eval a fine-tuning job names, run by the server through its own API.

After training, the job's suite (``ocak eval``'s format, inline in the job) runs on the
base and the tuned model over this app in-process (httpx's ASGI transport: no socket,
but every middleware, admission and the usage records, as for any client) with a key
that exists in this process only, for those two models only, for as long as the eval
runs. So the scores are those a client would measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ocak.evals.client import EvalClient
from ocak.evals.runner import evaluate
from ocak.evals.suite import parse_suite
from ocak.server.auth import Authenticator
from ocak.serving.tuning import Evaluate


def in_process_evaluator(app: FastAPI, auth: Authenticator) -> Evaluate:
    """What ``FineTuning`` calls to score the base and the tuned model."""

    async def run(data: dict[str, Any], models: list[str], output: Path) -> dict[str, Any]:
        suite = parse_suite({**data, "models": models}, output.parent / "suite.yaml")
        name = f"tuning-eval:{output.parent.name}"
        token = auth.internal_key(name, tuple(models))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 0))
        try:
            async with EvalClient("http://127.0.0.1", token, transport=transport) as client:
                outcome = await evaluate(suite, client, output, progress=False)
        finally:
            auth.drop_internal(name)
        return outcome.document

    return run
