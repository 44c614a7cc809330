"""A local stand-in for the Hugging Face Hub, over real HTTP on loopback.

It answers the requests ``huggingface_hub`` makes for a pull, the way the Hub
does: ``GET /api/models/{repo}[/revision/{rev}]`` (id, sha, siblings, card
data), ``GET /api/models/{repo}/tree/{rev}`` (files with their git and LFS
ids), ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``,
``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files and Range requests,
and 404s with ``X-Error-Code: RepoNotFound``/``EntryNotFound``. Tests point
``HF_ENDPOINT`` (or ``endpoint=``) at it.

Faults on demand: ``cut_after`` drops the connection once after so many bytes
of a file (the client resumes with a Range request); ``hang_after`` stalls the
body there (for a pull killed mid-file); ``corrupt`` serves other bytes of the
same size under the right checksum headers (what a broken mirror or disk does).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from helpers import AppServer

CHUNK = 1 << 20


class _Cut(Exception):
    """Raised inside a body: uvicorn drops the connection mid-response."""


@dataclass
class HubFile:
    path: str
    data: bytes | None = None  # small files (config, README) are held in memory
    source: Path | None = None  # large ones are read from disk
    lfs: bool = True

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for start in range(0, self.size, 8 * CHUNK):
            h.update(self.read(start, min(self.size, start + 8 * CHUNK)))
        return h.hexdigest()

    def git_oid(self) -> str:
        """The git blob id the Hub reports for a file (sha1 of ``blob <size>\\0`` + bytes)."""
        h = hashlib.sha1(f"blob {self.size}\0".encode())
        h.update(self.read(0, self.size))
        return h.hexdigest()


@dataclass
class HubRepo:
    id: str
    files: dict[str, HubFile]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    license: str | None = "apache-2.0"
    gated: bool = False
    _sha256: dict[str, str] = field(default_factory=dict)

    def file_sha256(self, name: str) -> str:
        if name not in self._sha256:
            self._sha256[name] = self.files[name].sha256()
        return self._sha256[name]


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubStub:
    """The Hub's API for the repos given; ``start()``/``stop()`` or a ``with`` block."""

    def __init__(self, *repos: HubRepo, token: str | None = None) -> None:
        self.repos = {r.id: r for r in repos}
        self.token = token  # when set, gated repos need it
        self.hits: list[Hit] = []
        self.cut_after: int | None = None  # once, then cleared
        self.hang_after: int | None = None
        self.corrupt: set[str] = set()
        self.lock = threading.Lock()
        self.server: AppServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def __enter__(self) -> HubStub:
        self.server = AppServer(self.app()).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    def downloads(self, name: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.method == "GET" and h.path.endswith("/" + name)]

    # -- the app -----------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/models/{repo:path}/tree/{rev}", self.tree, methods=["GET"]),
                Route("/api/models/{repo:path}/revision/{rev}", self.info, methods=["GET"]),
                Route("/api/models/{repo:path}", self.info, methods=["GET"]),
                Route(
                    "/{repo:path}/resolve/{rev}/{file:path}",
                    self.resolve,
                    methods=["GET", "HEAD"],
                ),
            ]
        )

    def _note(self, request: Request) -> None:
        with self.lock:
            self.hits.append(
                Hit(
                    request.method,
                    request.url.path,
                    request.headers.get("range"),
                    request.headers.get("authorization"),
                )
            )

    def _repo(self, request: Request) -> HubRepo | Response:
        repo = self.repos.get(request.path_params["repo"])
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if repo.gated and request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "GatedRepo", "Access to this model is restricted")
        rev = request.path_params.get("rev")
        if rev is not None and rev not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    async def info(self, request: Request) -> Response:
        self._note(request)
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        return JSONResponse(
            {
                "id": repo.id,
                "modelId": repo.id,
                "sha": repo.sha,
                "private": False,
                "gated": repo.gated,
                "tags": ["gguf"],
                "siblings": [{"rfilename": name} for name in repo.files],
                "cardData": {"license": repo.license} if repo.license else {},
            }
        )

    async def tree(self, request: Request) -> Response:
        self._note(request)
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        entries = []
        for name, f in repo.files.items():
            entry: dict[str, object] = {
                "type": "file",
                "oid": f.git_oid(),
                "size": f.size,
                "path": name,
            }
            if f.lfs:
                entry["lfs"] = {"oid": repo.file_sha256(name), "size": f.size, "pointerSize": 134}
            entries.append(entry)
        return JSONResponse(entries)

    async def resolve(self, request: Request) -> Response:
        self._note(request)
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        name = request.path_params["file"]
        f = repo.files.get(name)
        if f is None:
            return _error(404, "EntryNotFound", f"{name} does not exist on main")
        etag = f'"{repo.file_sha256(name)}"' if f.lfs else f'"{f.git_oid()}"'
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = etag
            headers["X-Linked-Size"] = str(f.size)
        start, end = 0, f.size
        status = 200
        spec = request.headers.get("range")
        if spec and spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else f.size
            if start >= f.size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{f.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=200, headers={**headers, "Content-Length": str(f.size)})
        corrupt = name in self.corrupt
        return StreamingResponse(
            self._body(f, start, end, corrupt), status_code=status, headers=headers
        )

    async def _body(self, f: HubFile, start: int, end: int, corrupt: bool) -> AsyncIterator[bytes]:
        pos = start
        while pos < end:
            n = min(CHUNK, end - pos)
            chunk = f.read(pos, pos + n)
            if corrupt:
                chunk = bytes(b ^ 0x5A for b in chunk)
            with self.lock:
                cut, hang = self.cut_after, self.hang_after
            if cut is not None and pos < cut <= pos + n:
                yield chunk[: cut - pos]
                with self.lock:
                    self.cut_after = None
                raise _Cut()
            if hang is not None and pos + n > hang >= pos:
                yield chunk[: hang - pos]
                while True:
                    await asyncio.sleep(3600)
            yield chunk
            pos += n


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": message},
        status_code=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )
