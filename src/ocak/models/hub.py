"""``ocak models pull``: a model from the Hugging Face Hub (or a mirror) into the store.

A reference is ``OWNER/REPO`` with an optional ``:TAG``: a quantization
(``:Q4_K_M``) or a file name (``:model.Q8_0.gguf``) picking one GGUF (all its
shards when it is split), or, in a repo without GGUF files, a safetensors
checkpoint that is then converted to CTranslate2 (``models/convert.py``).
``huggingface_hub`` answers what a repo holds (its API, ``HF_TOKEN`` for gated
models, ``HF_ENDPOINT`` for mirrors); the bytes come through ``fetch``, which
resumes from what is on disk with Range requests (after a dropped connection,
and in the next run after a kill). Every file is hashed against the Hub's sha256
(LFS files) or git blob id (small files) and refused when it differs. Files
land in a hidden staging folder of the store and the model appears, manifest
and all, by one rename: a killed pull leaves no half model, and the next pull
of the same name resumes from the staging folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ocak.errors import InvalidRequest, ModelNotFound, OcakError, Unavailable
from ocak.models.gguf_header import gguf_kind, read_metadata
from ocak.models.manifest import Kind, Manifest, Source, check_name, describe_files
from ocak.models.source import read_json_object
from ocak.models.store import ModelStore

Stage = Literal["resolving", "downloading", "verifying", "converting", "success"]
QUANT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q8_0")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_CHECKPOINT_FILES = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|"
    r"special_tokens_map\.json|chat_template\.jinja|vocab\.json|merges\.txt|"
    r".*\.safetensors|model\.safetensors\.index\.json)$"
)
_PARAMS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class PullError(OcakError):
    """A pull that cannot go on: a bad reference, an ambiguous choice, a broken file."""

    status = 400
    code = "pull_failed"


class ChecksumMismatch(PullError):
    status = 502
    code = "checksum_mismatch"


@dataclass(frozen=True, slots=True)
class HubRef:
    repo: str
    tag: str | None = None
    revision: str = "main"

    @property
    def name(self) -> str:
        """The name the model is served by."""
        return f"{self.repo}:{self.tag}" if self.tag else self.repo


def parse_ref(text: str, revision: str = "main") -> HubRef:
    """``OWNER/REPO[:TAG]``, also written as a Hub URL (``https://huggingface.co/...``,
    ``hf.co/...``)."""
    ref = re.sub(r"^(https?://)?(huggingface\.co|hf\.co)/", "", text.strip()).strip("/")
    repo, _, tag = ref.partition(":")
    if repo.count("/") != 1:
        raise InvalidRequest(
            f"'{text}' is not a Hub repository: write OWNER/REPO, optionally with :QUANT "
            "or :FILE.gguf (e.g. HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M)",
            param="model",
        )
    check_name(ref)
    return HubRef(repo, tag or None, revision)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the Hub's sha256 of the content
    git_oid: str | None  # small files: git's blob id (sha1 of "blob <size>\0" + content)


@dataclass
class PullPlan:
    ref: HubRef
    commit: str
    files: list[RemoteFile]
    engine: str  # "llama.cpp" (a GGUF) or "ctranslate2" (a checkpoint, converted)
    entry: str  # the file the engine opens ('.' for a converted folder)
    license: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a pull, for a progress bar or an SSE event."""

    stage: Stage
    file: str | None = None
    completed: int = 0
    total: int | None = None
    detail: str = ""


Report = Callable[[Progress], None]


def _silent(p: Progress) -> None:
    pass


class Hub:
    """The Hub's API through ``huggingface_hub``; its errors translated into ocak's."""

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.endpoint = endpoint
        self.token = token
        self.api = HfApi(endpoint=endpoint, token=token)

    @property
    def where(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    def plan(self, ref: HubRef) -> PullPlan:
        """What a pull of ``ref`` takes: the commit, the files with their checksums."""
        from huggingface_hub.hf_api import RepoFile

        with self._translated(ref):
            info = self.api.model_info(ref.repo, revision=ref.revision)
            commit = info.sha or ref.revision
            tree = list(self.api.list_repo_tree(ref.repo, revision=commit, recursive=True))
        files = [
            RemoteFile(t.path, int(t.size), t.lfs.sha256 if t.lfs else None, t.blob_id)
            for t in tree
            if isinstance(t, RepoFile)  # files, not folders
        ]
        card = getattr(info, "card_data", None) or {}
        declared = card.get("license") if hasattr(card, "get") else None
        license_ = str(declared) if declared else None
        ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
        if ggufs:
            chosen = choose_gguf(ref, ggufs)
            return PullPlan(ref, commit, chosen, "llama.cpp", chosen[0].path, license_)
        if ref.tag is not None:
            raise PullError(f"{ref.repo} has no GGUF files, so there is no '{ref.tag}' to pick")
        wanted = [f for f in files if "/" not in f.path and _CHECKPOINT_FILES.match(f.path)]
        names = {f.path for f in wanted}
        if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
            raise PullError(
                f"{ref.repo} holds neither GGUF files nor a safetensors checkpoint "
                "(config.json and *.safetensors): nothing ocak can serve"
            )
        return PullPlan(ref, commit, wanted, "ctranslate2", ".", license_)

    def download(self, plan: PullPlan, folder: Path, report: Report) -> None:
        """Every file of ``plan`` into ``folder`` (resuming what is there), each verified."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils._headers import build_hf_headers

        headers = build_hf_headers(token=self.token, library_name="ocak")
        headers["Accept-Encoding"] = "identity"  # byte offsets must be the file's own
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0)) as client:
            for f in plan.files:
                dest = folder / f.path
                if not dest.is_file() or dest.stat().st_size != f.size:
                    url = hf_hub_url(
                        plan.ref.repo, f.path, revision=plan.commit, endpoint=self.endpoint
                    )
                    fetch(client, url, dest, f, headers, report, self.where)
                report(Progress("verifying", f.path, f.size, f.size))
                verify(dest, f)

    @contextlib.contextmanager
    def _translated(self, ref: HubRef) -> Iterator[None]:
        """``huggingface_hub``'s and the network's errors as ocak errors."""
        try:
            yield
        except OcakError:
            raise
        except Exception as exc:
            error = _hub_error(exc, self.where, ref)
            if error is exc:
                raise
            raise error from None


def _hub_error(exc: Exception, where: str, ref: HubRef) -> Exception:
    from huggingface_hub import errors as hf

    repo = ref.repo
    if isinstance(exc, hf.GatedRepoError):
        return PullError(
            f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of yours"
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelNotFound(
            repo, f"no repository '{repo}' on {where} (or it is private: set HF_TOKEN)"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return PullError(f"{repo} has no revision '{ref.revision}'")
    if isinstance(exc, hf.EntryNotFoundError):
        return PullError(f"a file of {repo} is missing on {where}: {exc}")
    if isinstance(exc, hf.HfHubHTTPError):
        return Unavailable(f"{where} answered the pull of {repo} with an error: {exc}")
    if isinstance(exc, OSError | ConnectionError) or type(exc).__module__.startswith("httpx"):
        return Unavailable(
            f"cannot reach {where} to pull {repo} ({type(exc).__name__}: {exc}); check the "
            "network, or HF_ENDPOINT for a mirror"
        )
    return exc  # not a failure of the Hub's: as it was


def choose_gguf(ref: HubRef, ggufs: list[RemoteFile]) -> list[RemoteFile]:
    """The GGUF (with its shards) that ``ref.tag`` names, or the one a user would want."""
    ggufs = [g for g in ggufs if "mmproj" not in g.path.lower()] or ggufs
    groups: dict[str, list[RemoteFile]] = {}
    for g in ggufs:
        groups.setdefault(_SHARD.sub(".gguf", g.path), []).append(g)
    tag = ref.tag
    if tag is not None and tag.lower().endswith(".gguf"):
        found = [k for k in groups if k == tag or k.rsplit("/", 1)[-1] == tag]
    elif tag is not None:
        pattern = re.compile(rf"(^|[-._/]){re.escape(tag)}([-._]|$)", re.IGNORECASE)
        found = [k for k in groups if pattern.search(k.removesuffix(".gguf"))]
    elif len(groups) == 1:
        found = list(groups)
    else:
        found = []
        for quant in QUANT_PREFERENCE:
            found = [k for k in groups if quant.lower() in k.lower()]
            if found:
                break
    if len(found) != 1:
        choices = ", ".join(sorted(_tag_of(k) for k in groups))
        what = f"'{tag}' matches {len(found)} of its GGUF files" if tag else "it has several"
        raise PullError(f"{ref.repo}: {what}; pick one with :TAG (one of: {choices})")
    return sorted(groups[found[0]], key=lambda g: g.path)


def _tag_of(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    match = re.search(r"(?i)(I?Q\d_[A-Z0-9_]+|Q\d_\d|F16|BF16|F32)$", stem)
    return match.group(1) if match else f"{stem}.gguf"


def fetch(
    client: httpx.Client,
    url: str,
    dest: Path,
    remote: RemoteFile,
    headers: dict[str, str],
    report: Report,
    where: str,
) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming from the bytes it holds
    (after a dropped connection, and in a later run after a kill) with Range requests.

    Not ``hf_hub_download``: since huggingface_hub 2.x it writes each download to a new
    process-unique temporary file, so a killed pull started again from zero (2.4.0).
    """
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    failures = 0
    while have < remote.size:
        ask = {**headers, "Range": f"bytes={have}-"} if have else headers
        try:
            with client.stream("GET", url, headers=ask) as response:
                if response.status_code not in (200, 206):
                    response.read()
                    raise _status_error(response, remote.path, where)
                if response.status_code == 200 and have:  # the server ignored the Range
                    have = 0
                with part.open("r+b" if have else "wb") as out:
                    out.seek(have)
                    out.truncate()
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        out.flush()  # what arrived survives a kill
                        have += len(chunk)
                        failures = 0
                        report(Progress("downloading", remote.path, have, remote.size))
        except httpx.TransportError as exc:
            failures += 1
            if failures > 5:
                raise Unavailable(
                    f"the download of {remote.path} from {where} keeps failing "
                    f"({type(exc).__name__}: {exc}); pull again to resume from "
                    f"{have / 2**20:.0f} MiB"
                ) from None
            time.sleep(min(2.0**failures / 4, 8.0))
            continue
        if have < remote.size:  # the body ended early without an error: ask for the rest
            failures += 1
            if failures > 5:
                raise Unavailable(f"{where} keeps ending {remote.path} early; pull again")
    part.replace(dest)


def _status_error(response: httpx.Response, path: str, where: str) -> OcakError:
    code = response.headers.get("X-Error-Code", "")
    if response.status_code in (401, 403) or code == "GatedRepo":
        return PullError(f"{where} refused {path} ({response.status_code}): set HF_TOKEN")
    if response.status_code == 404:
        return PullError(f"{path} is missing on {where} ({code or 404})")
    return Unavailable(f"{where} answered {response.status_code} for {path}")


def verify(path: Path, remote: RemoteFile) -> None:
    """Hash ``path`` against the Hub's id for it; a file that differs is removed."""
    if remote.sha256 is not None:
        h = hashlib.sha256()
        expected = remote.sha256
    elif remote.git_oid is not None:
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
        expected = remote.git_oid
    else:  # pragma: no cover - the Hub gives every file an id
        return
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    if h.hexdigest() != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{remote.path} arrived corrupted (its checksum is not the one the Hub lists); "
            "the file was removed: pull again"
        )


def pull(
    ref: HubRef,
    store: ModelStore,
    hub: Hub,
    *,
    report: Report = _silent,
    convert: Callable[[Path, Path, Report], None] | None = None,
    base: str | None = None,
) -> Manifest:
    """Pull ``ref`` into ``store``; the stored manifest (the same when it is up to date).
    A checkpoint is converted by ``convert`` (default: CTranslate2, the ``convert`` extra).
    A GGUF LoRA adapter is stored as kind ``adapter``, for ``base`` when given."""
    report(Progress("resolving", detail=f"{ref.name} on {hub.where}"))
    plan = hub.plan(ref)
    existing = store.find(ref.name)
    source = existing.manifest.source if existing is not None else None
    if existing is not None and source is not None and source.revision == plan.commit:
        report(Progress("success", detail=f"{ref.name} is up to date ({plan.commit[:12]})"))
        return existing.manifest
    with store.staging(ref.name, keep=True) as folder:
        downloads = folder / "download" if plan.engine == "ctranslate2" else folder
        hub.download(plan, downloads, report)
        shutil.rmtree(folder / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        params = _recommended(downloads)
        if plan.engine == "ctranslate2":
            report(Progress("converting", detail="to CTranslate2"))
            (convert or to_ctranslate2)(downloads, folder, report)
            shutil.rmtree(downloads)  # the checkpoint itself is not kept
            kind: Kind = "chat"
        else:
            kind = gguf_kind(read_metadata(folder / plan.entry), plan.entry)
        manifest = Manifest(
            name=ref.name,
            kind=kind,
            engine=plan.engine,
            entry=plan.entry,
            files=describe_files(folder),
            source=Source(repo=ref.repo, revision=plan.commit, files=[f.path for f in plan.files]),
            license=plan.license,
            params=params,
            base=base if kind == "adapter" else None,
        )
        store.commit(folder, manifest)
    report(Progress("success", detail=f"{ref.name} ({plan.commit[:12]})"))
    return manifest


def to_ctranslate2(source: Path, out: Path, report: Report) -> None:
    """A pulled checkpoint to CTranslate2 (needs the ``convert`` extra); its stages as
    progress."""
    from ocak.models.convert import convert_checkpoint

    class Stages:
        def stage(self, name: str, detail: str = "") -> None:
            report(Progress("converting", detail=f"{name}: {detail}"))

    convert_checkpoint(source, out, progress=Stages())


def _recommended(folder: Path) -> dict[str, Any]:
    """Sampling parameters from the checkpoint's ``generation_config.json``, if any."""
    data = read_json_object(folder / "generation_config.json")
    return {k: data[k] for k in _PARAMS if k in data}
