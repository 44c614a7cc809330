"""The HTML report: one self-contained file (inline CSS and SVG, no script, no external
asset) from the result document. Pass rates per case and target, latency and token
distributions, and each case's outputs side by side with a word diff against the first
target. Every string from the run (model output above all) is escaped: it is untrusted.
"""

from __future__ import annotations

import difflib
import re
import zlib
from html import escape
from pathlib import Path
from typing import Any

from ocak.evals.svg import box_strip, colour, pass_rate_bars

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;
max-width:1400px;padding:0 16px;color:#1d2230;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#dde;padding-bottom:4px}h3{font-size:15px;margin:0}
.meta{color:#5a6172}.pass{color:#17803d;font-weight:600}.fail{color:#c0262d;font-weight:600}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #dde;padding:4px 8px;
text-align:right;vertical-align:top}th:first-child,td:first-child{text-align:left}
th{background:#f3f4f8}.rate{display:inline-block;width:60px;height:8px;background:#eee;
margin-right:6px;vertical-align:middle}.rate>span{display:block;height:8px}
.chart text{font-size:12px;fill:#1d2230}.chart .tick{fill:#5a6172;font-size:11px}
.chart .grid{stroke:#e5e7ee}.chart .whisker{stroke:#1d2230;stroke-width:1.5}
details.case{border:1px solid #dde;border-radius:6px;margin:10px 0;padding:8px 12px}
details.case>summary{cursor:pointer}.cols{display:grid;gap:10px;margin-top:8px;
grid-template-columns:repeat(var(--n),minmax(0,1fr))}.col{border-top:4px solid;
padding:6px 8px;background:#fafbfd}pre{white-space:pre-wrap;word-break:break-word;
margin:4px 0;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#fff;
border:1px solid #e5e7ee;padding:6px}.badge{font-size:11px;padding:1px 6px;border-radius:8px;
color:#fff}.badge.ok{background:#17803d}.badge.no{background:#c0262d}
.reasons{font-size:12px;color:#5a6172;margin:0;padding-left:16px}
del{background:#fbd4d6;text-decoration:line-through}ins{background:#c9f0d3;
text-decoration:none}.err{color:#c0262d}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(rate: float) -> str:
    return f"{rate * 100:.0f}%"


def _rate_cell(entry: dict[str, Any]) -> str:
    rate, (low, high) = entry["pass_rate"], entry["wilson_95"]
    hue = "#17803d" if rate >= 1 else "#c0262d" if rate == 0 else "#c98a0e"
    errors = f' <span class="err">{entry["errors"]} err</span>' if entry["errors"] else ""
    return (
        f'<td title="95% interval {_pct(low)}–{_pct(high)}"><span class="rate"><span '
        f'style="width:{rate * 100:.0f}%;background:{hue}"></span></span>'
        f"{entry['passed']}/{entry['samples']}{errors}</td>"
    )


def word_diff(a: str, b: str) -> str:
    """``b`` against ``a`` word by word: removed words in ``<del>``, added in ``<ins>``,
    all escaped."""
    left, right = re.findall(r"\S+|\s+", a), re.findall(r"\S+|\s+", b)
    out = []
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(_e("".join(left[i1:i2])))
            continue
        if op in ("delete", "replace"):
            out.append(f"<del>{_e(''.join(left[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{_e(''.join(right[j1:j2]))}</ins>")
    return "".join(out)


def _summary(document: dict[str, Any]) -> str:
    suite = document["suite"]
    verdict = (
        '<span class="pass">PASSED</span>'
        if document["passed"]
        else ('<span class="fail">FAILED</span>')
    )
    rows = []
    for t in document["targets"]:
        low, high = t["wilson_95"]
        lat, tok = t["latency_ms"], t["completion_tokens"]
        ok = (
            '<span class="pass">pass</span>'
            if t["passed_threshold"]
            else ('<span class="fail">FAIL</span>')
        )
        versions = ", ".join(f"{_e(v.get('id'))}@{_e(v.get('version'))}"
                             for v in t.get("prompt_versions", []))  # fmt: skip
        rows.append(
            f"<tr><td>{_e(t['id'])}</td><td>{_pct(t['pass_rate'])}</td>"
            f"<td>{_pct(low)}–{_pct(high)}</td><td>{t['score_mean']:.2f} ± "
            f"{t['score_std']:.2f}</td><td>{t['errors']}</td><td>{t['retries']}</td>"
            f"<td>{_n(lat['p50'])}</td><td>{_n(lat['p90'])}</td><td>{_n(tok['p50'])}</td>"
            f"<td>{_n(tok['p90'])}</td><td>{versions or '-'}</td><td>{ok}</td></tr>"
        )
    bars = pass_rate_bars(
        [(t["id"], t["pass_rate"], *t["wilson_95"]) for t in document["targets"]],
        "Pass rate per target, with its 95% interval",
    )
    return (
        f"<h1>{_e(suite['name'])} {verdict}</h1>"
        f'<p class="meta">{_e(suite.get("description") or "")}</p>'
        f'<p class="meta">{len(suite["cases"])} cases × {len(suite["targets"])} targets × '
        f"{suite['repeats']} repeats on {_e(document['server'])}, {_e(document['started_at'])}"
        f" ({document['duration_s']:.1f} s); threshold {_pct(suite['threshold'])}; "
        f"suite {_e(suite['hash'][:12])}</p>"
        "<h2>Targets</h2><table><tr><th>target</th><th>pass rate</th><th>95% interval</th>"
        "<th>score</th><th>errors</th><th>retries</th><th>latency p50 ms</th><th>p90</th>"
        "<th>tokens p50</th><th>p90</th><th>prompt versions</th><th>verdict</th></tr>"
        f"{''.join(rows)}</table>{bars}"
    )


def _matrix(document: dict[str, Any]) -> str:
    targets = [t["id"] for t in document["targets"]]
    by_key = {(e["target"], e["case"]): e for e in document["cases"]}
    head = "".join(f"<th>{_e(t)}</th>" for t in targets)
    rows = []
    for case in document["suite"]["cases"]:
        name = case["name"]
        cells = "".join(_rate_cell(by_key[(t, name)]) for t in targets)
        rows.append(f'<tr><td><a href="#case-{_anchor(name)}">{_e(name)}</a></td>{cells}</tr>')
    return (
        "<h2>Pass rate per case</h2><p class=meta>passed / repeats; hover for the 95% "
        f"interval</p><table><tr><th>case</th>{head}</tr>{''.join(rows)}</table>"
    )


def _distributions(document: dict[str, Any]) -> str:
    samples = document["samples"]
    targets = [t["id"] for t in document["targets"]]

    def values(target: str, field: str) -> list[float]:
        return [
            float(s[field])
            for s in samples
            if s["target"] == target and s[field] is not None and s["error"] is None
        ]

    latency = box_strip([(t, values(t, "latency_ms")) for t in targets], "ms",
                        "Latency per request (client side)")  # fmt: skip
    tokens = box_strip([(t, values(t, "completion_tokens")) for t in targets], "tok",
                       "Completion tokens per answer")  # fmt: skip
    return f"<h2>Latency</h2>{latency}<h2>Completion tokens</h2>{tokens}"


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:80] + f"-{zlib.crc32(name.encode()) % 10_000}"


def _sample_block(s: dict[str, Any], against: tuple[str, str] | None) -> str:
    """One repeat's answer, its grades, and (``against``: the first target's id and its
    answer to the same repeat) a word diff when the two differ."""
    badge = (
        '<span class="badge ok">pass</span>'
        if s["passed"]
        else ('<span class="badge no">fail</span>')
    )
    meta = []
    if s["latency_ms"] is not None:
        meta.append(f"{s['latency_ms']:.0f} ms")
    if s["completion_tokens"] is not None:
        meta.append(f"{s['completion_tokens']} tok")
    if s["attempts"] > 1:
        meta.append(f"{s['attempts']} attempts")
    if s.get("prompt_version"):
        v = s["prompt_version"]
        meta.append(f"{_e(v.get('id'))}@{_e(v.get('version'))}")
    body = (
        f'<pre class="err">{_e(s["error"])}</pre>'
        if s["error"]
        else f"<pre>{_e(s['output'])}</pre>"
    )
    if against is not None and (s["output"] or "") != against[1]:
        body += (
            f"<div class=meta>vs {_e(against[0])}, same repeat:</div>"
            f"<pre>{word_diff(against[1], s['output'] or '')}</pre>"
        )
    if s["tool_calls"]:
        calls = "; ".join(f"{c['name']}({c['arguments']})" for c in s["tool_calls"])
        body += f"<pre>tool calls: {_e(calls)}</pre>"
    reasons = "".join(
        f"<li>{'✓' if g['passed'] else '✗'} {_e(g['grader'])}: {_e(g['reason'])}</li>"
        for g in s["grades"]
    )
    return (
        f"<div>repeat {s['repeat'] + 1} {badge} <span class=meta>{' · '.join(meta)}</span>"
        f'{body}<ul class="reasons">{reasons}</ul></div>'
    )


def _cases(document: dict[str, Any]) -> str:
    targets = [t["id"] for t in document["targets"]]
    by_key = {(e["target"], e["case"]): e for e in document["cases"]}
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in document["samples"]:
        samples.setdefault((s["target"], s["case"]), []).append(s)
    out = ["<h2>Outputs side by side</h2><p class=meta>Each target's answers; from the "
           "second target on, an answer that differs from the first target's answer to the "
           "same repeat is diffed word by word against it (<del>removed</del> "
           "<ins>added</ins>).</p>"]  # fmt: skip
    for case in document["suite"]["cases"]:
        name = case["name"]
        rates = " · ".join(f"{_e(t)} {_pct(by_key[(t, name)]['pass_rate'])}" for t in targets)
        first = {s["repeat"]: s for s in samples.get((targets[0], name), [])}
        cols = []
        for i, t in enumerate(targets):
            blocks = []
            for s in samples.get((t, name), []):
                base = first.get(s["repeat"])
                against = None
                if i > 0 and base is not None and not s["error"] and not base["error"]:
                    against = (targets[0], base["output"] or "")
                blocks.append(_sample_block(s, against))
            cols.append(
                f'<div class="col" style="border-color:{colour(i)}"><h3>{_e(t)}</h3>'
                f"{''.join(blocks)}</div>"
            )
        reference = (
            f"<div class=meta>reference:</div><pre>{_e(case['reference'])}</pre>"
            if case.get("reference") is not None
            else ""
        )
        graders = ", ".join(_e(g) for g in case["graders"]) or "none (passes unless an error)"
        failing = any(by_key[(t, name)]["pass_rate"] < 1 for t in targets)
        out.append(
            f'<details class="case" id="case-{_anchor(name)}"{" open" if failing else ""}>'
            f"<summary><b>{_e(name)}</b> "
            f"<span class=meta>{rates}</span></summary>"
            f"<div class=meta>input:</div><pre>{_e(case['input'])}</pre>{reference}"
            f"<div class=meta>graders: {graders}</div>"
            f'<div class="cols" style="--n:{len(targets)}">{"".join(cols)}</div></details>'
        )
    return "".join(out)


def render_html(document: dict[str, Any]) -> str:
    """The report for a result document, as one HTML page."""
    title = _e(f"ocak eval: {document['suite']['name']}")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        f"{_summary(document)}{_matrix(document)}{_distributions(document)}"
        f"{_cases(document)}</body></html>\n"
    )


def write_html(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(document), encoding="utf-8")
