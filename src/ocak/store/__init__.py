"""SQLite access (keys, usage records) behind small functions.

One database file, ``ocak.db`` in ocak's data folder, in WAL mode. Its schema
is versioned (``PRAGMA user_version``) and migrated forward when it is opened.
"""

from ocak.store.db import Database, StoreError, database_path, open_database

__all__ = ["Database", "StoreError", "database_path", "open_database"]
