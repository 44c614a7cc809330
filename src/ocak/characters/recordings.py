"""Players' recordings, kept only when the operator turns ``keep_recordings`` on.

Each is a WAV file under ``<data>/recordings/<session id>/``, named by the time it was
made; deleting the session deletes its folder. Off (the default), nothing of a
recording is written anywhere: it is transcribed in memory and dropped.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path


class Recordings:
    def __init__(self, root: Path, *, keep: bool) -> None:
        self.root = root
        self.enabled = keep

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, keep: bool) -> Recordings:
        return cls(data_dir / "recordings", keep=keep)

    def keep(self, session_id: str, data: bytes, suffix: str = ".wav") -> Path | None:
        """Store one recording of ``session_id`` (when kept at all); its path."""
        if not self.enabled:
            return None
        folder = self.root / session_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    def forget(self, session_id: str) -> None:
        """Delete every recording of ``session_id``."""
        shutil.rmtree(self.root / session_id, ignore_errors=True)
