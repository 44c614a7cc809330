"""``ocak eval SUITE.yaml``: run an eval suite against a running ocak and report.

Exit codes: 0 when every target's pass rate reaches the threshold, 1 when one falls
below, 2 for a suite that cannot run or a server that cannot be reached, 130 when
interrupted (the checkpoint keeps what was done: ``--resume``). docs/evals.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ocak.cli.common import err_console, fail, wide_console
from ocak.errors import OcakError
from ocak.evals.checkpoint import checkpoint_path
from ocak.evals.client import EvalClient
from ocak.evals.report_html import write_html
from ocak.evals.report_term import print_report
from ocak.evals.runner import Outcome, evaluate
from ocak.evals.suite import Suite, load_suite

EXIT_BAD_SETUP = 2


def _with_overrides(
    suite: Suite, repeats: int | None, concurrency: int | None, threshold: float | None
) -> Suite:
    return dataclasses.replace(
        suite,
        repeats=suite.repeats if repeats is None else repeats,
        concurrency=suite.concurrency if concurrency is None else concurrency,
        threshold=suite.threshold if threshold is None else threshold,
    )


def eval_suite(
    suite_file: Annotated[
        Path, typer.Argument(metavar="SUITE.yaml", help="The suite (docs/evals.md).")
    ],
    url: Annotated[
        str, typer.Option(envvar="OCAK_URL", help="The ocak server to evaluate on.")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option("--key", "--api-key", envvar="OCAK_API_KEY", help="A key, if it has keys."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The JSON result file (default: SUITE.results.json here)."
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the samples an interrupted run finished.")
    ] = False,
    repeats: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Override the suite's repeats.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="Override the suite's concurrency.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Override the suite's threshold.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds one request may take.")] = 300.0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="A progress bar on stderr.")
    ] = True,
) -> None:
    """Run SUITE.yaml's cases N times on each model / prompt version; report pass rates."""
    try:
        suite = _with_overrides(load_suite(suite_file), repeats, concurrency, threshold)
    except OcakError as exc:
        fail(exc.message, EXIT_BAD_SETUP)
    result = output or Path(f"{suite_file.stem}.results.json")

    async def main() -> Outcome:
        async with EvalClient(url, key, timeout=timeout) as client:
            return await evaluate(suite, client, result, resume=resume, progress=progress)

    try:
        outcome = asyncio.run(main())
    except OcakError as exc:
        fail(exc.message, EXIT_BAD_SETUP)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished samples are in {checkpoint_path(result)}; "
            "run again with --resume to continue",
            highlight=False,
        )
        raise typer.Exit(130) from None
    except OSError as exc:
        fail(f"cannot write the results: {exc}", EXIT_BAD_SETUP)
    if outcome.discarded:
        err_console.print(
            f"note: started over; {outcome.discarded} samples of an earlier run were dropped "
            "(--resume keeps them)",
            highlight=False,
        )
    if outcome.resumed:
        err_console.print(
            f"resumed: {outcome.resumed} samples from the checkpoint, {outcome.ran} run now",
            highlight=False,
        )
    document = outcome.document
    console: Console = wide_console()
    print_report(document, console)
    written = [str(result)]
    if html is not None:
        try:
            write_html(html, document)
        except OSError as exc:
            fail(f"cannot write the HTML report: {exc}", EXIT_BAD_SETUP)
        written.append(str(html))
    err_console.print(f"wrote {', '.join(written)}", highlight=False)
    if not document["passed"]:
        below = [t["id"] for t in document["targets"] if not t["passed_threshold"]]
        err_console.print(
            f"[bold red]below the threshold[/] ({suite.threshold * 100:.0f}%): " + ", ".join(below),
            highlight=False,
        )
        raise typer.Exit(1)
