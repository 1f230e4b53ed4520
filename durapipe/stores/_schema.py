"""The layout of durapipe's SQLite files, and bringing a file of an earlier durapipe up to it.

Two stores keep tables in SQLite: the checkpoint store (``checkpoints``, ``answers``) and the
provider limits (``leases``). By default they share one file (``~/.cache/durapipe/checkpoints.sqlite``;
``DURAPIPE_LIMITS`` may name another), and a SQLite file has one ``PRAGMA user_version``, so the
version is the file's: one sequence of layouts for every durapipe table in it. Each store names
its tables in a `Layout`; opening a store runs `migrate` with it, which

- refuses a file of a newer durapipe, or one that is not a durapipe store, with one sentence
  naming the file and its variable, instead of an ``sqlite3.OperationalError`` in a step;
- upgrades the file's existing tables in place (`_upgrade`: every table, whichever store opens
  the file first, so a file shared by both stores is never left half upgraded);
- creates the store's tables when they are missing, at today's layout.

The versions:

- 0, no ``user_version``: a ``checkpoints`` table of ``key, result`` (before retention), perhaps
  with ``created_at`` (retention), perhaps an ``answers`` table of ``key, answer`` (kept provider
  answers, before they expired) or with ``created_at``; perhaps a ``leases`` table (its layout has
  not changed since it was made); perhaps none at all (a new file);
- 1: ``checkpoints`` and ``answers`` with ``created_at``, ``leases`` as in 0; each table present
  once its store has opened the file. (``leases`` joined version 1 without a new number: it did
  not change, and a new number would make the durapipe of before refuse a file it reads well.)
Indexes do not make a new layout: code of an earlier layout reads and writes a table the same
with or without one, and a new number would make the durapipe of before refuse a file it reads
well. A store creates the indexes of its `Layout` that a file lacks whenever it opens it (one
look at ``sqlite_master``). So ``leases_lease`` (an index on ``leases.lease``: a call's `sent`
and `release` find its rows by lease id, which the ``(bucket, lease)`` primary key cannot serve,
so each was a scan of every row of the last two hours) joined layout 1 when the limits store
first opens a file of before it. The other way, a store drops the indexes its `Layout` lists as
``dropped`` when it opens a file holding them: ``checkpoints_age`` and ``answers_age`` (on
``created_at``, for ``prune`` alone) cost every step's write one more b-tree page in the log,
and prune scans the table instead. A durapipe of before creates them again when it opens the
file (a host's workers upgraded one by one); the next worker of this version to start drops them.

Rows of before retention get ``created_at = 0``: they count as expired, so they are not served
(an answer kept then was stored raw, not in today's encoding) and the next prune deletes them.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from durapipe._errors import ConfigError
from durapipe.stores._paths import CHECKPOINTS_ENV, LIMITS_ENV

SCHEMA_VERSION = 1  # bump with a migration step in `_upgrade` when a table's columns change


@dataclasses.dataclass(frozen=True)
class Layout:
    """The tables one store keeps in a durapipe SQLite file.

    Args:
        store: what the store is called in a sentence (``checkpoint``, ``limits``).
        variable: the setting that names the file, which an error tells the user to change.
        columns: the columns this version reads and writes, by table.
        create: statements that create the tables (and their indexes) at today's layout when
            missing (``IF NOT EXISTS``).
        indexes: the names of the indexes ``create`` makes; a file lacking one gets ``create``
            run again when the store opens it (see the module's docstring).
        dropped: indexes an earlier durapipe made that this one drops when the store opens a
            file holding them (see the module's docstring).
    """

    store: str
    variable: str
    columns: Mapping[str, tuple[str, ...]]
    create: Sequence[str]
    indexes: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


CHECKPOINTS = Layout(
    store="checkpoint",
    variable=CHECKPOINTS_ENV,
    columns={
        "checkpoints": ("key", "result", "created_at"),
        "answers": ("key", "answer", "created_at"),
    },
    create=(
        "CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, result TEXT NOT NULL, "
        "created_at REAL NOT NULL DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
        "created_at REAL NOT NULL DEFAULT 0)",
    ),
    # Every step's write added its row to this index too: one more b-tree page written to the log
    # per step (a sixth of a step's store work), for `prune` alone, which scans without it.
    dropped=("checkpoints_age", "answers_age"),
)

LIMITS = Layout(
    store="limits",
    variable=LIMITS_ENV,
    columns={"leases": ("bucket", "lease", "started", "expires", "tokens")},
    create=(
        "CREATE TABLE IF NOT EXISTS leases (bucket TEXT, lease TEXT, started REAL, "
        "expires REAL, tokens INTEGER, PRIMARY KEY (bucket, lease))",
        "CREATE INDEX IF NOT EXISTS leases_started ON leases (bucket, started)",
        # `SqliteLimits.sent` and `release` update a lease's rows by its id alone.
        "CREATE INDEX IF NOT EXISTS leases_lease ON leases (lease)",
    ),
    indexes=("leases_started", "leases_lease"),
)


def migrate(path: Path, layout: Layout, *, timeout: float = 30) -> None:
    """Bring the file at ``path`` to `SCHEMA_VERSION` and give it ``layout``'s tables.

    Idempotent, and safe when several workers open the file at once: the upgrade runs inside one
    ``BEGIN IMMEDIATE`` transaction (one writer at a time) and re-reads the version inside it, so
    the second worker finds the work done. A file already up to date is only read.

    Some of SQLite's lock conflicts while workers open a new file at once return "database is
    locked" at once rather than waiting ``timeout`` (seen with two workers starting together on
    a fresh file): those are tried again, each a fresh start, until ``timeout`` has gone by.

    Raises:
        ConfigError: the file was written by a newer durapipe, is not a SQLite database, or holds
            tables this version cannot read (or stayed locked for ``timeout`` seconds).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _migrate(path, layout, timeout)
        except sqlite3.OperationalError as err:
            if not _locked(err) or time.monotonic() >= deadline:
                raise _unreadable(path, layout, str(err)) from None
        time.sleep(0.05)


def _locked(err: sqlite3.OperationalError) -> bool:
    return getattr(err, "sqlite_errorcode", None) in _BUSY or "locked" in str(err)


_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def _migrate(path: Path, layout: Layout, timeout: float) -> None:
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as err:
        raise _unreadable(path, layout, str(err)) from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if _version(db, path, layout) != SCHEMA_VERSION or _missing(db, layout):
            db.execute("BEGIN IMMEDIATE")
            try:
                _upgrade(db, _version(db, path, layout))
                _check(db, path, layout, present_only=True)  # before indexing their columns
                for statement in layout.create:
                    db.execute(statement)
                for index in layout.dropped:
                    db.execute(f"DROP INDEX IF EXISTS {index}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        _check(db, path, layout)
    except sqlite3.OperationalError as err:
        if _locked(err):
            raise  # `migrate` tries again
        raise _unreadable(path, layout, str(err)) from None
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, layout, str(err)) from None
    finally:
        db.close()


def _version(db: sqlite3.Connection, path: Path, layout: Layout) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{layout.variable}: the {layout.store} file '{path}' was written by a newer durapipe "
            f"(layout {version}; this one reads up to {SCHEMA_VERSION}): upgrade durapipe on this "
            f"worker or set {layout.variable} to another file"
        )
    return version


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    # Every table the file has, not only the opening store's (see the module's docstring).
    if version < 1:
        for table in CHECKPOINTS.columns:
            columns = _columns(db, table)
            if columns and "created_at" not in columns:
                # Rows of before retention expire now (see the module's docstring).
                db.execute(f"ALTER TABLE {table} ADD COLUMN created_at REAL NOT NULL DEFAULT 0")


def _missing(db: sqlite3.Connection, layout: Layout) -> bool:
    """Whether the file lacks one of the layout's tables or indexes, or holds one it drops."""
    if any(not _columns(db, table) for table in layout.columns):
        return True
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return not indexes.issuperset(layout.indexes) or not indexes.isdisjoint(layout.dropped)


def _check(
    db: sqlite3.Connection, path: Path, layout: Layout, *, present_only: bool = False
) -> None:
    # A file at the current version whose tables lack a column (made by hand, or by another
    # program) would fail every step: it fails the opening instead.
    for table, wanted in layout.columns.items():
        have = _columns(db, table)
        if present_only and not have:
            continue
        missing = [c for c in wanted if c not in have]
        if missing:
            raise _unreadable(path, layout, f"table '{table}' has no column {', '.join(missing)}")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _unreadable(path: Path, layout: Layout, why: str) -> ConfigError:
    return ConfigError(
        f"{layout.variable}: the {layout.store} file '{path}' cannot be read as a durapipe "
        f"{layout.store} store ({why}): set {layout.variable} to another file, or move this one away"
    )
