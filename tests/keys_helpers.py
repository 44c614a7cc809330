"""Helpers for tests of keys and usage records on real servers: the CLI and the database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


def ocak(
    data_dir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``ocak`` command with this data folder (and ``env`` added)."""
    result = subprocess.run(
        [sys.executable, "-m", "ocak", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OCAK_DATA_DIR": str(data_dir), "COLUMNS": "200", **(env or {})},
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ocak {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def create_key(data_dir: Path, name: str, *options: str) -> str:
    out = ocak(data_dir, "keys", "create", "--name", name, *options).stdout.strip()
    assert out.startswith("ocak-") and "\n" not in out, out
    return out


def usage_rows(data_dir: Path, **where: Any) -> list[dict[str, Any]]:
    """Usage rows as the database has them (read by a separate connection, like a restart)."""
    conn = sqlite3.connect(data_dir / "ocak.db")
    conn.row_factory = sqlite3.Row
    try:
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        rows = conn.execute(
            f"SELECT * FROM usage WHERE {clause} ORDER BY id", tuple(where.values())
        )
        return [dict(r) for r in rows]
    finally:
        conn.close()
