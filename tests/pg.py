"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package (``make
test`` installs it): a cluster made by ``initdb`` in a temporary folder and started by
``pg_ctl`` on a free loopback port, as the ``postgres`` user when the tests run as root
(``initdb`` refuses root), stopped at the end. Each test gets a database of its own.

Under CI=true a PostgreSQL that cannot be found or started fails the test; elsewhere it
skips it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import free_port

_names = itertools.count(1)


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    return found[-1] or None


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed and {why} (`make test` installs postgresql)")
    pytest.skip(f"no PostgreSQL: {why} (`make test` installs postgresql)")


class PgServer:
    """One cluster; ``database()`` makes a fresh database and returns its URL."""

    def __init__(self) -> None:
        # Not under pytest's folder: the postgres user must reach it (pytest's is root's, 0700).
        folder = Path(tempfile.mkdtemp(prefix="ocak-pg-"))
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            unavailable("initdb/pg_ctl are not installed")
        assert initdb is not None and pg_ctl is not None
        self.pg_ctl = pg_ctl
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "ocak", "--no-sync",
                   "-E", "UTF8"])  # fmt: skip
        options = (f"-p {self.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
        self._run([pg_ctl, "-D", str(self.data), "-o", options, "-l", str(folder / "log"),
                   "-w", "-t", "60", "start"])  # fmt: skip

    def _run(self, args: list[str]) -> None:
        try:
            subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            output = getattr(exc, "stderr", b"") or b""
            unavailable(f"it did not start: {exc} {output.decode(errors='replace')} {tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://ocak@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        import psycopg

        name = f"t{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
