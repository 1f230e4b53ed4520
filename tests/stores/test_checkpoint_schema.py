"""Checkpoint files written by earlier durapipes: migrated in place when a store opens them (also by
two workers at once), and a file this version cannot read refused at worker start in one sentence.

The old layouts are built here with the statements the earlier stores ran (see ``git log -p`` of
the store modules), not kept as binary fixtures."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import durapipe as dp
from durapipe._errors import ConfigError
from durapipe.runtime import LeafResult
from durapipe.stores import SqliteCheckpoints, _schema
from durapipe.stores._checkpoints import _connect
from durapipe.stores._schema import CHECKPOINTS, SCHEMA_VERSION, migrate
from tests.stores.schema_support import newer_layout, refusal_at_start

RESULTS_ONLY = ["CREATE TABLE checkpoints (key TEXT PRIMARY KEY, result TEXT NOT NULL)"]
# Kept answers arrived before retention did (issue 16's branch): neither table had created_at.
ANSWERS_BEFORE_RETENTION = [
    *RESULTS_ONLY,
    "CREATE TABLE answers (key TEXT PRIMARY KEY, answer BLOB NOT NULL)",
]
RETENTION = [
    *RESULTS_ONLY,
    "ALTER TABLE checkpoints ADD COLUMN created_at REAL NOT NULL DEFAULT 0",
    "CREATE INDEX checkpoints_age ON checkpoints (created_at)",
]
# The merge of both: results expired, answers did not (the 'no such column: created_at' file).
RETENTION_AND_OLD_ANSWERS = [
    *RETENTION,
    "CREATE TABLE answers (key TEXT PRIMARY KEY, answer BLOB NOT NULL)",
]
LAYOUTS = {
    "results-only": RESULTS_ONLY,
    "answers-before-retention": ANSWERS_BEFORE_RETENTION,
    "retention-without-answers": RETENTION,
    "retention-with-old-answers": RETENTION_AND_OLD_ANSWERS,
}


def _old_file(path: Path, statements: list[str]) -> Path:
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO checkpoints (key, result) VALUES ('old', '{\"output\": 1}')")
        if any("answers" in s for s in statements):
            db.execute("INSERT INTO answers (key, answer) VALUES ('answer:old', x'7b7d')")
    db.close()
    return path


def _result(text: str) -> LeafResult:
    return LeafResult(output=text)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_file_of_an_earlier_durapipe_is_migrated_and_keeps_working(
    tmp_path: Path, layout: str
) -> None:
    path = _old_file(tmp_path / "checkpoints.sqlite", LAYOUTS[layout])
    store = SqliteCheckpoints(path, ttl=3600)
    assert store.put("new", _result("fresh")) and store.get("new") == _result("fresh")
    store.put_answer("answer:new", b'{"id": 1}')
    assert store.get_answer("answer:new") == b'{"id": 1}'
    assert store.get_answer_nowait("answer:new") == b'{"id": 1}'
    # Rows of before retention count as expired: not served (an old answer is raw, not today's
    # encoding), written over by a new result, and pruned.
    assert store.get("old") is None and store.get_answer("answer:old") is None
    assert store.prune() == 1
    assert store.put("old", _result("again")) and store.get("old") == _result("again")
    # Opening it again (another worker, a restart) changes nothing.
    again = SqliteCheckpoints(path, ttl=3600)
    assert again.get("new") == _result("fresh")
    assert again.get_answer("answer:new") == b'{"id": 1}'
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION


def test_workers_opening_an_old_file_at_once_all_migrate_it(tmp_path: Path) -> None:
    path = _old_file(tmp_path / "checkpoints.sqlite", RETENTION_AND_OLD_ANSWERS)
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    stores: list[SqliteCheckpoints] = []

    def open_it() -> None:
        start.wait()
        try:
            stores.append(SqliteCheckpoints(path, ttl=3600))
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 8
    for n, store in enumerate(stores):
        store.put_answer(f"answer:{n}", b"x")
    assert all(stores[0].get_answer(f"answer:{n}") == b"x" for n in range(8))


def _newer_file_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint file of a newer layout, named by DURAPIPE_CHECKPOINTS."""
    path = tmp_path / "checkpoints.sqlite"
    SqliteCheckpoints(path).put("k", _result("x"))
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(path))
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    return path


async def test_a_file_of_a_newer_durapipe_fails_the_worker_at_start_naming_the_file(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _newer_file_configured(tmp_path, monkeypatch)
    refusal = await refusal_at_start(temporal_address, task_queue)
    assert refusal == newer_layout("DURAPIPE_CHECKPOINTS", "checkpoint", path)
    # Refused without touching it.
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_a_worker_given_its_checkpoints_in_code_leaves_the_configured_file_alone(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _newer_file_configured(tmp_path, monkeypatch)
    own = SqliteCheckpoints(tmp_path / "own.sqlite")
    client = await dp.connect(temporal_address, checkpoints=own)
    # Its steps use `own`: the file DURAPIPE_CHECKPOINTS names is not its to refuse or migrate.
    dp.build_worker(client, task_queue=task_queue)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a database, a note someone left here" * 100, "file is not a database"),
        (None, "table 'checkpoints' has no column result"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_store_is_refused_in_one_sentence(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    path = tmp_path / "checkpoints.sqlite"
    if content is not None:
        path.write_bytes(content)
    else:  # a current version number over tables of another shape
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE checkpoints (key TEXT PRIMARY KEY, value TEXT, created_at REAL)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.close()
    with pytest.raises(ConfigError) as refused:
        SqliteCheckpoints(path)
    assert str(refused.value) == (
        f"DURAPIPE_CHECKPOINTS: the checkpoint file '{path}' cannot be read as a durapipe "
        f"checkpoint store ({why}): set DURAPIPE_CHECKPOINTS to another file, or move this one away"
    )


def test_the_migration_keeps_rows_that_already_had_an_age(tmp_path: Path) -> None:
    path = _old_file(tmp_path / "checkpoints.sqlite", RETENTION_AND_OLD_ANSWERS)
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "INSERT INTO checkpoints (key, result, created_at) VALUES (?, ?, ?)",
            ("recent", _result("kept").model_dump_json(), time.time()),
        )
    db.close()
    assert SqliteCheckpoints(path, ttl=3600).get("recent") == _result("kept")


# The layout of the release before this one: the tables of today with an index on each one's age,
# which its store created whenever a file lacked one (and creates again: a host's workers are
# upgraded one by one, on one file).
AGE_INDEXED = [
    "CREATE TABLE checkpoints (key TEXT PRIMARY KEY, result TEXT NOT NULL, "
    "created_at REAL NOT NULL DEFAULT 0)",
    "CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
    "created_at REAL NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS checkpoints_age ON checkpoints (created_at)",
    "CREATE INDEX IF NOT EXISTS answers_age ON answers (created_at)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
]


def _indexes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        return {row[0] for row in rows}
    finally:
        db.close()


def test_the_age_indexes_of_the_release_before_are_dropped_and_come_back_harmlessly(
    tmp_path: Path,
) -> None:
    # A step's write no longer adds its row to an index on its age (one b-tree page less in the
    # log per step); prune scans instead. A file of the release before loses them when a store
    # opens it, and a worker of that release, opening the file later, makes them again: both
    # keep reading and writing it.
    path = tmp_path / "checkpoints.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in AGE_INDEXED:
        db.execute(statement)
    db.execute(
        "INSERT INTO checkpoints (key, result, created_at) VALUES (?, ?, ?)",
        ("before", _result("kept").model_dump_json(), time.time()),
    )
    db.close()
    assert _indexes(path) == {"checkpoints_age", "answers_age"}
    store = SqliteCheckpoints(path, ttl=3600)
    assert _indexes(path) == set()
    assert store.get_nowait("before") == _result("kept") == store.get("before")
    assert store.put_nowait("now", _result("new")) and store.get("now") == _result("new")
    db = sqlite3.connect(path, isolation_level=None)  # a worker of before opens the file
    for statement in AGE_INDEXED[2:4]:
        db.execute(statement)
    db.execute("UPDATE checkpoints SET created_at = 0 WHERE key = 'before'")
    db.close()
    assert store.put_nowait("later", _result("later")) and store.get("later") == _result("later")
    assert store.prune() == 1 and store.get("before") is None
    SqliteCheckpoints(path, ttl=3600)
    assert _indexes(path) == set()
    # A new file never has them.
    SqliteCheckpoints(tmp_path / "new.sqlite")
    assert _indexes(tmp_path / "new.sqlite") == set()


class _LockedAtFirst:
    """A connection whose first statement finds the file locked at once, as SQLite answers some
    conflicts between workers opening a new file together (without waiting its timeout)."""

    def __init__(self, real: sqlite3.Connection, locked: list[bool]) -> None:
        self.real, self.locked = real, locked

    def execute(self, statement: str, *args: object) -> sqlite3.Cursor:
        if self.locked and self.locked.pop():
            raise sqlite3.OperationalError("database is locked")
        return self.real.execute(statement, *args)

    def close(self) -> None:
        self.real.close()


def test_a_file_locked_at_once_while_another_worker_opens_it_is_opened_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect
    locked = [True, True]  # the first two tries find it locked
    monkeypatch.setattr(
        _schema.sqlite3, "connect", lambda *a, **k: _LockedAtFirst(connect(*a, **k), locked)
    )
    path = tmp_path / "cp.sqlite"
    migrate(path, CHECKPOINTS)
    assert locked == []
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_that_stays_locked_fails_with_the_sentence_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect
    monkeypatch.setattr(
        _schema.sqlite3,
        "connect",
        lambda *a, **k: _LockedAtFirst(connect(*a, **k), [True] * 10_000),
    )
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot be read as a durapipe checkpoint store"):
        migrate(tmp_path / "cp.sqlite", CHECKPOINTS, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10


def test_a_connection_that_never_waits_still_waits_to_be_set_up(tmp_path: Path) -> None:
    # `PRAGMA synchronous` reads the schema: another worker holding the file's lock for an instant
    # (switching it to WAL as it opens it) made the loop's connection (busy timeout 0) fail its
    # setup with "database is locked" (seen once in a fresh-clone CI, 8 workers opening at once).
    path = tmp_path / "checkpoints.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    loop_db = _connect(path, timeout=0, autocommit=True)  # waits out the lock, then sets up
    assert loop_db.execute("PRAGMA busy_timeout").fetchone()[0] == 0  # and never waits after
    other.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        loop_db.execute("SELECT * FROM t").fetchall()
    assert time.monotonic() - started < 1.0
    other.execute("COMMIT")
    other.close()
    loop_db.close()
