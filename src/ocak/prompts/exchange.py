"""Export and import of prompts as plain dicts: an export checked through before use.

Every version of an export is checked as ``PromptStore.create`` checks one, and its
sha256 recomputed from its content: a stated sha256 that differs is refused, so an
import can tell a version the store already has from one that conflicts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ocak.errors import InvalidRequest
from ocak.prompts.model import Version, check_id, check_label, checked, content_of, sha256_of

EXPORT_FORMAT = "ocak.prompts/1"

# One exported prompt: id, description, created_at, versions, labels.
Parsed = tuple[str, str | None, float, list[Version], dict[str, int]]


def parse_export(data: object) -> list[Parsed]:
    """An export checked through, every version re-hashed, before anything is written."""
    if not isinstance(data, Mapping) or data.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise InvalidRequest(f"Not an export of format {EXPORT_FORMAT}.", param="format")
    prompts = data.get("prompts")
    if not isinstance(prompts, list):
        raise InvalidRequest("An export holds a list of prompts.", param="prompts")
    out: list[Parsed] = []
    seen: set[str] = set()
    for i, p in enumerate(prompts):
        at = f"prompts.[{i}]"
        if not isinstance(p, Mapping):
            raise InvalidRequest("A prompt is an object.", param=at)
        pid = p.get("id")
        try:
            check_id(pid)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=f"{at}.id") from exc
        assert isinstance(pid, str)
        if pid in seen:
            raise InvalidRequest(f"The prompt '{pid}' is exported twice.", param=f"{at}.id")
        seen.add(pid)
        raw_versions, labels = p.get("versions"), p.get("labels") or {}
        if not isinstance(raw_versions, list) or not raw_versions:
            raise InvalidRequest("A prompt holds a list of versions.", param=f"{at}.versions")
        versions = [
            _parse_version(pid, n, v, f"{at}.versions.[{n - 1}]")
            for n, v in enumerate(raw_versions, 1)
        ]
        if not isinstance(labels, Mapping):
            raise InvalidRequest("Labels are an object.", param=f"{at}.labels")
        for name, number in labels.items():
            try:
                check_label(name)
            except InvalidRequest as exc:
                raise InvalidRequest(exc.message, param=f"{at}.labels") from exc
            if not isinstance(number, int) or not 1 <= number <= len(versions):
                raise InvalidRequest(
                    f"The label '{name}' points at no exported version.",
                    param=f"{at}.labels.{name}",
                )
        description = p.get("description")
        created = p.get("created_at")
        out.append(
            (
                pid,
                description if isinstance(description, str) else None,
                float(created) if isinstance(created, int | float) else time.time(),
                versions,
                dict(labels),
            )
        )
    return out


def _parse_version(pid: str, number: int, v: object, at: str) -> Version:
    if not isinstance(v, Mapping):
        raise InvalidRequest("A version is an object.", param=at)
    if v.get("version") != number:
        raise InvalidRequest(
            f"Versions are numbered 1, 2, ... in order: expected {number}.", param=f"{at}.version"
        )
    try:
        msgs, decl, prms = checked(
            v.get("messages"), v.get("variables"), v.get("model"), v.get("params")
        )
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=f"{at}.{exc.param}") from exc
    model = v.get("model")
    sha = sha256_of(content_of(msgs, decl, model, prms))
    if v.get("sha256") not in (None, sha):
        raise InvalidRequest(
            "The version's sha256 does not match its content.", param=f"{at}.sha256"
        )
    note, created = v.get("note"), v.get("created_at")
    return Version(
        pid,
        number,
        msgs,
        decl,
        model,
        prms,
        note if isinstance(note, str) else None,
        sha,
        float(created) if isinstance(created, int | float) else time.time(),
    )
