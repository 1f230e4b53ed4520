"""The layout of a SQLite checkpoint file, and bringing a file of an earlier durapipe up to it.

A user who upgrades durapipe keeps the shared file (``~/.cache/durapipe/checkpoints.sqlite`` by
default), so every layout an earlier durapipe wrote is migrated in place when a store opens it:

- version 0, no ``user_version``: a ``checkpoints`` table of ``key, result`` (before retention),
  perhaps with ``created_at`` (retention), perhaps an ``answers`` table of ``key, answer`` (kept
  provider answers, before they expired) or with ``created_at``, perhaps none at all (a new file);
- version 1: both tables with ``created_at``, and ``PRAGMA user_version = 1``.

Rows of before retention get ``created_at = 0``: they count as expired, so they are not served
(an answer kept then was stored raw, not in today's encoding) and the next prune deletes them.
A file of a newer durapipe, or a file that is not a checkpoint store, fails the store's opening
with one sentence naming the file, instead of an ``sqlite3.OperationalError`` in a step.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from durapipe._errors import ConfigError
from durapipe.stores._paths import CHECKPOINTS_ENV

SCHEMA_VERSION = 1  # bump with a migration step in `_upgrade` when the layout changes

# The columns this version reads and writes, by table.
_COLUMNS = {
    "checkpoints": ("key", "result", "created_at"),
    "answers": ("key", "answer", "created_at"),
}


def migrate(path: Path, *, timeout: float = 30) -> None:
    """Bring the checkpoint file at ``path`` to `SCHEMA_VERSION` (creating its tables if new).

    Idempotent, and safe when several workers open the file at once: the upgrade runs inside one
    ``BEGIN IMMEDIATE`` transaction (one writer at a time) and re-reads the version inside it, so
    the second worker finds the work done.

    Raises:
        ConfigError: the file was written by a newer durapipe, is not a SQLite database, or holds
            tables this version cannot read.
    """
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as err:
        raise _unreadable(path, str(err)) from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if _version(db, path) != SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                _upgrade(db, path, _version(db, path))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        _check(db, path)
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, str(err)) from None
    finally:
        db.close()


def _version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{CHECKPOINTS_ENV}: the checkpoint file '{path}' was written by a newer durapipe "
            f"(layout {version}; this one reads up to {SCHEMA_VERSION}): upgrade durapipe on this "
            f"worker or set {CHECKPOINTS_ENV} to another file"
        )
    return version


def _upgrade(db: sqlite3.Connection, path: Path, version: int) -> None:
    if version < 1:
        db.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, result TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)"
        )
        for table in _COLUMNS:
            if "created_at" not in _columns(db, table):
                # Rows of before retention expire now (see the module's docstring).
                db.execute(f"ALTER TABLE {table} ADD COLUMN created_at REAL NOT NULL DEFAULT 0")
        db.execute("CREATE INDEX IF NOT EXISTS checkpoints_age ON checkpoints (created_at)")
        db.execute("CREATE INDEX IF NOT EXISTS answers_age ON answers (created_at)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check(db: sqlite3.Connection, path: Path) -> None:
    # A file at the current version whose tables lack a column (made by hand, or by another
    # program) would fail every step: it fails the opening instead.
    for table, wanted in _COLUMNS.items():
        missing = [c for c in wanted if c not in _columns(db, table)]
        if missing:
            raise _unreadable(path, f"table '{table}' has no column {', '.join(missing)}")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _unreadable(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{CHECKPOINTS_ENV}: the checkpoint file '{path}' cannot be read as a durapipe checkpoint "
        f"store ({why}): set {CHECKPOINTS_ENV} to another file, or move this one away"
    )
