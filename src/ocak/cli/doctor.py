"""``ocak doctor``: what a bug report needs, and every known-bad combination with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ocak.cli.common import fail_on
from ocak.config import Settings
from ocak.errors import OcakError
from ocak.system.doctor import Report, run_checks


def render(report: Report, console: Console) -> None:
    """Sections as two-column tables, then the findings, errors first."""
    for name, facts in report.sections.items():
        table = Table(title=name, title_justify="left", show_header=False, box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in facts.items():
            table.add_row(key, value)
        console.print(table)
        console.print()
    findings = sorted(report.findings, key=lambda f: f.level != "error")
    if not findings:
        console.print("[green]no known problem found[/]")
        return
    for f in findings:
        mark = "[bold red]error[/]" if f.level == "error" else "[yellow]warning[/]"
        console.print(f"{mark}: {f.what}", highlight=False)
        console.print(f"  fix: {f.fix}", highlight=False)


def doctor(
    config: Path = typer.Option(None, "--config", help="The YAML settings `serve` would use."),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="The models `serve` would load (as for serve)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check this machine for ocak and print a report to paste into a bug report.

    Exit code 1 when something `serve` needs would fail.
    """
    try:
        settings = Settings.load(config, model=model or None)
    except OcakError as exc:
        fail_on(exc, 2)
    report = run_checks(settings)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report, Console(width=max(Console().width, 100)))
    if report.failed:
        raise typer.Exit(1)
