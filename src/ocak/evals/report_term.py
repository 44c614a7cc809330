"""The terminal report: pass rates per case and target, a summary per target, and the
most common errors (rich tables)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _pct(rate: float) -> str:
    return f"{rate * 100:.0f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cell(entry: dict[str, Any]) -> str:
    n, passed = entry["samples"], entry["passed"]
    colour = "green" if passed == n else "red" if passed == 0 else "yellow"
    text = f"[{colour}]{passed}/{n}[/]"
    if entry["errors"]:
        text += f" [red]({entry['errors']} err)[/]"
    return text


def case_table(document: dict[str, Any]) -> Table:
    targets = [t["id"] for t in document["targets"]]
    table = Table(title="Pass rate per case (passed / repeats)", title_justify="left")
    table.add_column("case", overflow="fold")
    for t in targets:
        table.add_column(escape(t), justify="right", overflow="fold")
    by_key = {(e["target"], e["case"]): e for e in document["cases"]}
    for case in document["suite"]["cases"]:
        table.add_row(escape(case["name"]), *(_cell(by_key[(t, case["name"])]) for t in targets))
    overall = []
    for t in document["targets"]:
        low, high = t["wilson_95"]
        colour = "green" if t["passed_threshold"] else "red"
        overall.append(
            f"[bold {colour}]{_pct(t['pass_rate'])}[/] [dim]({_pct(low)}–{_pct(high)})[/]"
        )
    table.add_section()
    table.add_row("[bold]overall[/]", *overall)
    return table


def target_table(document: dict[str, Any]) -> Table:
    threshold = document["suite"]["threshold"]
    table = Table(title=f"Targets (threshold {_pct(threshold)})", title_justify="left")
    for name in ("target", "pass rate", "95% interval", "score", "errors", "retries",
                 "latency p50", "p90", "tokens p50", "p90", "verdict"):  # fmt: skip
        table.add_column(name, justify="left" if name == "target" else "right")
    for t in document["targets"]:
        low, high = t["wilson_95"]
        verdict = "[green]pass[/]" if t["passed_threshold"] else "[red]FAIL[/]"
        table.add_row(
            escape(t["id"]),
            _pct(t["pass_rate"]),
            f"{_pct(low)}–{_pct(high)}",
            f"{t['score_mean']:.2f} ± {t['score_std']:.2f}",
            str(t["errors"] + t["grader_errors"]),
            str(t["retries"]),
            _ms(t["latency_ms"]["p50"]),
            _ms(t["latency_ms"]["p90"]),
            _num(t["completion_tokens"]["p50"]),
            _num(t["completion_tokens"]["p90"]),
            verdict,
        )
    return table


def common_errors(document: dict[str, Any], limit: int = 5) -> list[tuple[str, int]]:
    """The most frequent request and grader errors, with how often each happened."""
    counts: Counter[str] = Counter()
    for s in document["samples"]:
        if s["error"]:
            counts[f"{s['target']}: {s['error']}"] += 1
        for g in s["grades"]:
            if g["error"]:
                counts[f"{s['target']}: {g['grader']}: {g['reason']}"] += 1
    return counts.most_common(limit)


def print_report(document: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(case_table(document))
    console.print(target_table(document))
    errors = common_errors(document)
    if errors:
        console.print("[bold red]Errors[/] (most frequent):")
        for message, count in errors:
            console.print(f"  {count} × {escape(message[:300])}", highlight=False)
