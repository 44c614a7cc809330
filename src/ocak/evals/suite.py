"""An eval suite: its YAML read and checked, its cases (inline and from chat-format JSONL)
and its targets (models × prompt versions), resolved into plain values.

Every problem is reported at once, each naming where it is (``cases[2].assert[0].value:
Field required``), as a ``SuiteError`` (exit code 2 in the CLI). The format is in
docs/evals.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ocak.errors import InvalidRequest
from ocak.evals.base import Grader
from ocak.evals.graders import GraderError, parse_grader

# Request fields the runner sets itself; a suite's params may not.
RESERVED_PARAMS = ("model", "messages", "prompt", "stream", "stream_options", "n")
MAX_PROBLEMS = 20


class SuiteError(InvalidRequest):
    """A suite that cannot run: unreadable, or wrong somewhere (the message says where)."""


def _path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MessageSpec(BaseModel):
    """A chat message as OpenAI writes it (other fields, e.g. ``tool_calls``, pass on)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class PromptSpec(_Strict):
    """A registry prompt to evaluate: by ``version``, by ``label``, or its latest."""

    id: str = Field(min_length=1, max_length=64)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    label: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _one_of(self) -> PromptSpec:
        if self.version is not None and self.label is not None:
            raise ValueError("give a prompt's version or its label, not both")
        return self

    @property
    def ref(self) -> str:
        """``npc-greeting@2``, ``npc-greeting@staging``, or ``npc-greeting`` (latest)."""
        which = self.version if self.version is not None else self.label
        return self.id if which is None else f"{self.id}@{which}"

    def request(self, variables: dict[str, Any]) -> dict[str, Any]:
        ref: dict[str, Any] = {"id": self.id}
        if self.version is not None:
            ref["version"] = self.version
        if self.label is not None:
            ref["label"] = self.label
        return {**ref, "variables": variables}


class CaseSpec(_Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = None
    messages: list[MessageSpec] | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    reference: str | None = None
    asserts: list[Any] = Field(default_factory=list, alias="assert")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SuiteSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    models: list[str] = Field(default_factory=list)
    prompts: list[PromptSpec] = Field(default_factory=list)
    repeats: int = Field(5, ge=1, le=1000)
    threshold: float = Field(1.0, ge=0, le=1)
    concurrency: int = Field(4, ge=1, le=256)
    defaults: dict[str, Any] = Field(default_factory=dict)
    cases: list[CaseSpec] = Field(default_factory=list)
    cases_file: list[str] = Field(default_factory=list)
    asserts: list[Any] = Field(default_factory=list, alias="assert")

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("models", "cases_file"):
                if isinstance(data.get(key), str):
                    data[key] = [data[key]]
        return data


@dataclass(frozen=True)
class Target:
    """Where each case is sent: a model (or alias), a registry prompt, or both."""

    model: str | None
    prompt: PromptSpec | None = None

    @property
    def id(self) -> str:
        if self.prompt is None:
            return self.model or ""
        return self.prompt.ref if self.model is None else f"{self.model} + {self.prompt.ref}"

    def to_dict(self) -> dict[str, Any]:
        prompt = None if self.prompt is None else self.prompt.model_dump(exclude_none=True)
        return {"id": self.id, "model": self.model, "prompt": prompt}


@dataclass(frozen=True)
class Case:
    """One case, resolved: what is sent (beside the target), and how it is graded."""

    name: str
    messages: tuple[dict[str, Any], ...]
    graders: tuple[Grader, ...]
    params: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    source: str = ""

    @property
    def input(self) -> str:
        """The last user message's text (a judge's ``{{input}}``), else the variables."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return text_of(m.get("content"))
        return json.dumps(self.variables, ensure_ascii=False) if self.variables else ""

    def request(self, target: Target) -> dict[str, Any]:
        """The chat completion body for this case on ``target`` (non-streaming)."""
        body: dict[str, Any] = dict(self.params)
        if target.model is not None:
            body["model"] = target.model
        if target.prompt is not None:
            body["prompt"] = target.prompt.request(self.variables)
        if self.messages or target.prompt is None:
            body["messages"] = [dict(m) for m in self.messages]
        tools = [t for t in (g.tool() for g in self.graders) if t is not None]
        if tools and "tools" not in body:
            body["tools"] = tools
        body["stream"] = False
        return body

    def spec(self) -> dict[str, Any]:
        """What identifies this case for the suite's hash."""
        return {
            "name": self.name,
            "messages": list(self.messages),
            "params": self.params,
            "variables": self.variables,
            "reference": self.reference,
            "graders": [g.model_dump(mode="json", by_alias=True) for g in self.graders],
        }


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    targets: tuple[Target, ...]
    cases: tuple[Case, ...]
    repeats: int = 5
    threshold: float = 1.0
    concurrency: int = 4
    description: str | None = None

    @property
    def hash(self) -> str:
        """sha256 of what decides the samples (targets, cases, graders, repeats); not the
        threshold or concurrency, which a resumed run may change."""
        spec = {
            "name": self.name,
            "targets": [t.to_dict() for t in self.targets],
            "cases": [c.spec() for c in self.cases],
            "repeats": self.repeats,
        }
        canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def samples(self) -> int:
        return len(self.targets) * len(self.cases) * self.repeats


def text_of(content: Any) -> str:
    """A message's content as text (the text parts of a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def from_validation(self, exc: ValidationError, prefix: str = "") -> None:
        for e in exc.errors():
            path = _path([*([prefix] if prefix else []), *e["loc"]])
            self.add(path, e["msg"])

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_PROBLEMS]
            more = len(self.items) - len(shown)
            lines = "\n  ".join(shown + ([f"... and {more} more"] if more > 0 else []))
            raise SuiteError(f"{self.where} is not a valid suite:\n  {lines}")


def _graders(raw: list[Any], path: str, problems: _Problems) -> list[Grader]:
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(parse_grader(item))
        except GraderError as exc:
            for sub, message in exc.problems:
                problems.add(f"{path}[{i}]{'.' + sub if sub else ''}", message)
    return out


def _check_params(params: dict[str, Any], path: str, problems: _Problems) -> None:
    for key in RESERVED_PARAMS:
        if key in params:
            problems.add(f"{path}.{key}", "set by ocak eval itself (remove it)")


def read_cases_file(path: Path, shown: str, problems: _Problems) -> list[CaseSpec]:
    """Chat-format JSONL (one ``{"messages": [...]}`` a line, OpenAI's fine-tuning format,
    ``ocak usage export --format jsonl``): a last assistant message is the reference."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"cases_file {shown}", f"cannot read it ({exc})")
        return []
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{shown} line {number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.add(where, f"not JSON ({exc})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            problems.add(where, 'not a chat line: expected {"messages": [...]}')
            continue
        messages = list(row["messages"])
        reference = None
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            answer = messages.pop()
            # an answer that was only tool calls has no text to compare with
            reference = text_of(answer.get("content")) or (None if answer.get("tool_calls") else "")
        meta: dict[str, Any] = row["metadata"] if isinstance(row.get("metadata"), dict) else {}
        name = next(
            (str(meta[k]) for k in ("name", "id", "request_id") if meta.get(k)),
            f"{Path(shown).stem}:{number}",
        )
        params = {k: row[k] for k in ("tools", "parallel_tool_calls") if row.get(k) is not None}
        try:
            case = CaseSpec(name=name, messages=messages, reference=reference, params=params)
        except ValidationError as exc:
            problems.from_validation(exc, where)
            continue
        if not case.messages:
            problems.add(where, "no messages left to send (only an assistant answer)")
            continue
        case.metadata = {"source": where}
        out.append(case)
    return out


def parse_suite(data: Any, path: Path) -> Suite:
    """A suite from its parsed YAML (``path`` for messages and relative cases files)."""
    problems = _Problems(str(path))
    if not isinstance(data, dict):
        problems.add("", "the file must be a mapping with name, models and cases")
        problems.raise_if_any()
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        problems.from_validation(exc)
        problems.raise_if_any()
        raise
    if not spec.models and not spec.prompts:
        problems.add("models", "give at least one model (or prompts that name theirs)")
    _check_params(spec.defaults, "defaults", problems)
    shared = _graders(spec.asserts, "assert", problems)
    specs: list[tuple[CaseSpec, str]] = [(c, f"cases[{i}]") for i, c in enumerate(spec.cases)]
    for name in spec.cases_file:
        file = (path.parent / name).expanduser()
        specs += [(c, c.metadata["source"]) for c in read_cases_file(file, name, problems)]
    if not specs:
        problems.add("cases", "a suite needs cases (or a cases_file with lines)")
    cases, seen = [], set()
    for i, (c, where) in enumerate(specs):
        own = _graders(c.asserts, f"{where}.assert", problems)
        _check_params(c.params, f"{where}.params", problems)
        name = c.name or f"case-{i + 1}"
        if name in seen:
            if where.startswith("cases["):
                problems.add(f"{where}.name", f"another case is named {name!r}")
            name = f"{name}#{i + 1}"
        seen.add(name)
        if not spec.prompts and not c.messages:
            problems.add(f"{where}.messages", "a case needs messages (or the suite prompts)")
        if not spec.prompts and c.variables:
            problems.add(f"{where}.variables", "variables fill a registry prompt: add prompts")
        graders = [*own, *shared]
        for g in graders:
            if g.uses_reference() and c.reference is None:
                problems.add(
                    where,
                    f"grader {g.describe()!r} compares with a reference and the case has "
                    "none (give the case a reference, or the grader a value)",
                )
        messages = tuple(m.model_dump(exclude_none=True) for m in c.messages or [])
        params = {**spec.defaults, **c.params}
        cases.append(Case(name, messages, tuple(graders), params, c.variables, c.reference, where))
    models: list[str | None] = list(spec.models) or [None]
    prompts: list[PromptSpec | None] = list(spec.prompts) or [None]
    targets = tuple(Target(m, p) for m in models for p in prompts)
    ids = [t.id for t in targets]
    for t in dict.fromkeys(i for i in ids if ids.count(i) > 1):
        problems.add("models" if len(prompts) == 1 else "prompts", f"{t!r} is listed twice")
    problems.raise_if_any()
    return Suite(
        spec.name,
        path,
        targets,
        tuple(cases),
        spec.repeats,
        spec.threshold,
        spec.concurrency,
        spec.description,
    )


def load_suite(path: Path) -> Suite:
    """Read and check the suite at ``path`` (``SuiteError`` for any problem)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read the suite {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path} is not valid YAML{where}: {problem}") from None
    return parse_suite(data, path)
