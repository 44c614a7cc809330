"""Which store a process opens: ``ocak.db`` in the data folder (SQLite, the embedded
default), or PostgreSQL when ``database_url`` is set (several ocak processes sharing
keys and usage records)."""

from __future__ import annotations

from ocak.config import Settings
from ocak.store.db import Store, database_path, open_database


def open_store(settings: Settings) -> Store:
    if settings.database_url:
        from ocak.store.postgres import open_postgres

        return open_postgres(settings.database_url)
    return open_database(database_path(settings.data_dir))
