"""Samples and what a run's results say about them: pass rates with their spread, latency
and token distributions, errors; and the JSON result file (``FORMAT``, a stable schema).

A sample is one case run once on one target. A case's pass rate on a target is over its
N repeats, with a Wilson 95% interval (how sure N repeats make it) and the standard
deviation of the per-repeat scores; a target's pass rate is over all its samples.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from ocak.evals.base import Grade
from ocak.evals.suite import Suite

FORMAT = "ocak-eval/1"
Key = tuple[str, str, int]  # target id, case name, repeat


@dataclass
class Sample:
    """One case run once on one target: the answer (or error), its grades and costs."""

    target: str
    case: str
    repeat: int
    output: str | None = None
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None  # as the answer named it
    prompt_version: dict[str, Any] | None = None  # the registry version the server used
    attempts: int = 1
    waited_s: float = 0.0
    grades: list[Grade] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.target, self.case, self.repeat)

    @property
    def passed(self) -> bool:
        return self.error is None and all(g.passed for g in self.grades)

    @property
    def score(self) -> float:
        if self.error is not None:
            return 0.0
        if not self.grades:
            return 1.0
        return sum(g.score for g in self.grades) / len(self.grades)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "case": self.case,
            "repeat": self.repeat,
            "passed": self.passed,
            "score": round(self.score, 6),
            "output": self.output,
            "tool_calls": self.tool_calls,
            "finish_reason": self.finish_reason,
            "status": self.status,
            "error": self.error,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "attempts": self.attempts,
            "waited_s": round(self.waited_s, 3),
            "grades": [g.to_dict() for g in self.grades],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        grades = [
            Grade(
                str(g["grader"]),
                bool(g["passed"]),
                float(g["score"]),
                str(g["reason"]),
                bool(g.get("error", False)),
            )
            for g in d.get("grades", [])
        ]
        return cls(
            target=str(d["target"]),
            case=str(d["case"]),
            repeat=int(d["repeat"]),
            output=d.get("output"),
            tool_calls=list(d.get("tool_calls") or []),
            finish_reason=d.get("finish_reason"),
            status=d.get("status"),
            error=d.get("error"),
            latency_ms=d.get("latency_ms"),
            prompt_tokens=d.get("prompt_tokens"),
            completion_tokens=d.get("completion_tokens"),
            model=d.get("model"),
            prompt_version=d.get("prompt_version"),
            attempts=int(d.get("attempts", 1)),
            waited_s=float(d.get("waited_s", 0.0)),
            grades=grades,
        )


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a pass rate ``passed / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = passed / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: list[float]) -> dict[str, float | None]:
    """p50, p90, min, max and mean of ``values`` (all None when there are none)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "p50": r(percentile(values, 0.5)),
        "p90": r(percentile(values, 0.9)),
        "min": r(min(values)) if values else None,
        "max": r(max(values)) if values else None,
        "mean": r(statistics.fmean(values)) if values else None,
    }


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """What a group of samples says: pass rate, its interval, score spread, errors,
    latency and token distributions."""
    n = len(samples)
    passed = sum(s.passed for s in samples)
    scores = [s.score for s in samples]
    low, high = wilson(passed, n)
    errors = [s for s in samples if s.error is not None]
    latencies = [s.latency_ms for s in samples if s.latency_ms is not None and s.error is None]
    completion = [float(s.completion_tokens) for s in samples if s.completion_tokens is not None]
    prompt = [float(s.prompt_tokens) for s in samples if s.prompt_tokens is not None]
    return {
        "samples": n,
        "passed": passed,
        "pass_rate": round(passed / n, 6) if n else 0.0,
        "wilson_95": [round(low, 6), round(high, 6)],
        "score_mean": round(statistics.fmean(scores), 6) if scores else 0.0,
        "score_std": round(statistics.stdev(scores), 6) if len(scores) > 1 else 0.0,
        "errors": len(errors),
        "grader_errors": sum(1 for s in samples for g in s.grades if g.error),
        "retries": sum(s.attempts - 1 for s in samples),
        "latency_ms": distribution(latencies),
        "completion_tokens": distribution(completion),
        "prompt_tokens": distribution(prompt),
    }


def _grader_rates(samples: list[Sample]) -> dict[str, float]:
    counts: dict[str, list[int]] = {}
    for s in samples:
        for g in s.grades:
            c = counts.setdefault(g.grader, [0, 0])
            c[0] += g.passed
            c[1] += 1
    return {name: round(p / n, 6) for name, (p, n) in counts.items()}


def _versions(samples: list[Sample]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for s in samples:
        if s.prompt_version:
            seen.setdefault(repr(sorted(s.prompt_version.items())), s.prompt_version)
    return list(seen.values())


def build_document(
    suite: Suite,
    samples: dict[Key, Sample],
    *,
    server: str,
    started_at: str,
    finished_at: str,
    duration_s: float,
) -> dict[str, Any]:
    """The JSON result file: the suite, per-target and per-(target, case) summaries, and
    every sample in the suite's order."""
    ordered = [
        samples[(t.id, c.name, r)]
        for t in suite.targets
        for c in suite.cases
        for r in range(suite.repeats)
        if (t.id, c.name, r) in samples
    ]
    targets, cases = [], []
    for t in suite.targets:
        mine = [s for s in ordered if s.target == t.id]
        summary = summarize(mine)
        per_case = []
        for c in suite.cases:
            group = [s for s in mine if s.case == c.name]
            entry = {"target": t.id, "case": c.name, **summarize(group)}
            entry["graders"] = _grader_rates(group)
            entry["prompt_versions"] = _versions(group)
            per_case.append(entry)
        cases += per_case
        summary["cases_all_passed"] = sum(1 for e in per_case if e["passed"] == e["samples"])
        summary["passed_threshold"] = summary["pass_rate"] >= suite.threshold
        summary["prompt_versions"] = _versions(mine)
        targets.append({**t.to_dict(), **summary})
    return {
        "format": FORMAT,
        "suite": {
            "name": suite.name,
            "description": suite.description,
            "path": str(suite.path),
            "hash": suite.hash,
            "repeats": suite.repeats,
            "threshold": suite.threshold,
            "targets": [t.to_dict() for t in suite.targets],
            "cases": [
                {
                    "name": c.name,
                    "source": c.source,
                    "input": c.input,
                    "reference": c.reference,
                    "graders": [g.describe() for g in c.graders],
                }
                for c in suite.cases
            ],
        },
        "server": server,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": round(duration_s, 3),
        "passed": all(t["passed_threshold"] for t in targets),
        "targets": targets,
        "cases": cases,
        "samples": [s.to_dict() for s in ordered],
    }
