"""Limits files (``leases``) of earlier durapipes: versioned like the checkpoint file, since both
may be one file (`durapipe.stores._schema`). A file of today's layout without a version keeps
working; a newer one is refused at worker start in one sentence naming the file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from durapipe._errors import ConfigError
from durapipe.runtime import LeafResult
from durapipe.spec import LimitRule
from durapipe.stores import SqliteCheckpoints, SqliteLimits
from durapipe.stores._schema import SCHEMA_VERSION
from tests.stores.schema_support import newer_layout, refusal_at_start

# The statements the limits store ran before its file had a version (see `git log -p` of
# durapipe/stores/_limits.py).
UNVERSIONED_LEASES = [
    "CREATE TABLE IF NOT EXISTS leases (bucket TEXT, lease TEXT, started REAL, "
    "expires REAL, tokens INTEGER, PRIMARY KEY (bucket, lease))",
    "CREATE INDEX IF NOT EXISTS leases_started ON leases (bucket, started)",
]
ONE = [LimitRule.model_validate({"model": "openai/*", "concurrency": 1})]


def _version(path: Path) -> int:
    return int(sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0])


def test_a_limits_file_of_before_versions_keeps_its_leases_and_gets_a_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "limits.sqlite"
    db = sqlite3.connect(path)
    with db:
        for statement in UNVERSIONED_LEASES:
            db.execute(statement)
        # A call in flight when the old worker stopped: its lease still holds the one slot.
        now = time.time()
        db.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?)",
            (ONE[0].bucket, "old", now, now + 60, 0),
        )
    db.close()
    assert _version(path) == 0
    limits = SqliteLimits(path)
    assert limits.try_acquire("new", ONE, 0, 60) > 0.0  # the old lease counts
    limits.release("old", ONE, 0)
    assert limits.try_acquire("new", ONE, 0, 60) == 0.0
    assert _version(path) == SCHEMA_VERSION
    SqliteLimits(path)  # opening it again changes nothing


def test_an_old_shared_file_opened_first_by_the_limits_store_still_serves_checkpoints(
    tmp_path: Path,
) -> None:
    # The default: both stores in one file. The limits store may open it first (a worker with
    # checkpoints off); it must not mark the file current while its checkpoint table is not.
    path = tmp_path / "checkpoints.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE checkpoints (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        for statement in UNVERSIONED_LEASES:
            db.execute(statement)
    db.close()
    SqliteLimits(path)
    store = SqliteCheckpoints(path, ttl=3600)
    assert store.put("k", LeafResult(output="x")) and store.get("k") == LeafResult(output="x")
    assert _version(path) == SCHEMA_VERSION


def test_a_checkpoint_file_gets_the_leases_table_without_a_new_version(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    SqliteCheckpoints(path)
    SqliteLimits(path).try_acquire("a", ONE, 0, 60)
    assert _version(path) == SCHEMA_VERSION


def test_a_limits_file_of_another_shape_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "limits.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE leases (bucket TEXT, lease TEXT, started REAL)")
    db.close()
    with pytest.raises(ConfigError) as refused:
        SqliteLimits(path)
    assert str(refused.value) == (
        f"DURAPIPE_LIMITS: the limits file '{path}' cannot be read as a durapipe limits store "
        "(table 'leases' has no column expires, tokens): set DURAPIPE_LIMITS to another file, "
        "or move this one away"
    )


async def test_a_limits_file_of_a_newer_durapipe_fails_the_worker_at_start(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "limits.sqlite"
    SqliteLimits(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    monkeypatch.setenv("DURAPIPE_LIMITS", str(path))
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(tmp_path / "checkpoints.sqlite"))
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    refusal = await refusal_at_start(temporal_address, task_queue)
    assert refusal == newer_layout("DURAPIPE_LIMITS", "limits", path)
    assert _version(path) == SCHEMA_VERSION + 1  # refused without touching it


def _plan(path: Path, statement: str) -> str:
    db = sqlite3.connect(path)
    try:
        return " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", ("x",)))
    finally:
        db.close()


# What `SqliteLimits.sent` and `release` run (by lease id alone): on an index, not a scan of
# every lease of the last two hours.
SENT = "UPDATE leases SET started = 0 WHERE lease = ? AND started > 0"
RELEASE = "UPDATE leases SET expires = 0, tokens = 0, started = MIN(started, 0) WHERE lease = ?"


def test_sent_and_release_find_a_lease_by_its_index(tmp_path: Path) -> None:
    path = tmp_path / "limits.sqlite"
    SqliteLimits(path)
    for statement in (SENT, RELEASE):
        assert "USING INDEX leases_lease (lease=?)" in _plan(path, statement), statement


def test_a_limits_file_of_before_gets_the_lease_index_without_a_new_layout(
    tmp_path: Path,
) -> None:
    # Layout 1 as the durapipe of before left it: the tables, no index on lease.
    path = tmp_path / "checkpoints.sqlite"
    SqliteLimits(path)
    SqliteCheckpoints(path)
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP INDEX leases_lease")
        now = time.time()
        db.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?)", (ONE[0].bucket, "old", now, now + 60, 0)
        )
    db.close()
    assert "SCAN leases" in _plan(path, RELEASE)
    limits = SqliteLimits(path)  # a worker's start opens it
    assert "USING INDEX leases_lease" in _plan(path, RELEASE)
    # The same layout number: a durapipe of before still opens the file (an index changes
    # nothing it reads or writes).
    assert _version(path) == SCHEMA_VERSION == 1
    assert limits.try_acquire("new", ONE, 0, 60) > 0.0  # the old lease kept its slot
    limits.release("old", ONE, 0)
    assert limits.try_acquire("new", ONE, 0, 60) == 0.0
