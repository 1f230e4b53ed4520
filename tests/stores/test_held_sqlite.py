"""The event loop's connection to the checkpoint store keeps the GIL through its calls."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from durapipe.runtime import LeafResult
from durapipe.stores import SqliteCheckpoints, _held_sqlite
from durapipe.stores._held_sqlite import HeldConnection


def test_the_loops_reads_and_writes_never_let_a_waiting_thread_run(tmp_path: Path) -> None:
    # A thread that wants the GIL every 100 us (as litellm's pool threads do in a busy worker).
    # With a long switch interval it only runs when the main thread lets go of the GIL itself:
    # sqlite3 did inside every step of every statement, so the thread ran amid the store's calls.
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    ran = [0]
    stop = threading.Event()

    def waiting() -> None:
        while not stop.is_set():
            ran[0] += 1
            time.sleep(0.0001)

    thread = threading.Thread(target=waiting)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(2.0)
    thread.start()
    try:
        while ran[0] < 10:  # it runs, and wants the GIL again every 100 us
            time.sleep(0.001)
        result = LeafResult(output="kept", model="m")
        before = ran[0]
        for i in range(100):  # under WAL_CHECKPOINT_EVERY: no checkpoint thread is started
            store.put_nowait(f"k{i}", result)
            store.get_nowait(f"k{i}")
        during = ran[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join()
    assert during == 0


def test_a_held_connection_reads_back_what_sqlite3_stored_and_counts_changed_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "values.sqlite"
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
    values = ["é ünïcode ✓", b"\x00\xffbytes", 2**62, 1.5, None, "", b""]
    plain.executemany("INSERT INTO t VALUES (?, ?)", [(str(i), v) for i, v in enumerate(values)])
    held = _held_sqlite.held_connection(path, (), wait=1)
    assert isinstance(held, HeldConnection)
    for i, value in enumerate(values):
        assert held.execute("SELECT v FROM t WHERE k = ?", (str(i),)).fetchone() == (value,)
    assert held.execute("SELECT v FROM t WHERE k = 'none'").fetchone() is None
    changed = held.execute("UPDATE t SET v = ? WHERE k IN ('0', '1')", ("x",)).rowcount
    assert changed == 2
    assert held.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 2)]).rowcount == 2
    assert plain.execute("SELECT v FROM t WHERE k = 'b'").fetchone() == (2,)  # committed
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        held.execute("SELECT * FROM missing")
    held.close()


def test_a_held_connection_answers_busy_at_once_when_another_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.sqlite"
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    held = _held_sqlite.held_connection(path, ("PRAGMA busy_timeout = 0",), wait=1)
    assert held is not None
    plain.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        held.execute("INSERT INTO t VALUES ('x')")
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    plain.execute("COMMIT")
    assert held.execute("INSERT INTO t VALUES ('x')").rowcount == 1  # the statement was reset


def test_the_store_keeps_sqlite3_when_switched_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DURAPIPE_SQLITE_HELD", "off")
    assert _held_sqlite.held_connection(tmp_path / "x.sqlite", (), wait=1) is None
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    assert isinstance(store._loop_db, sqlite3.Connection)
    assert store.put_nowait("k", LeafResult(output="kept", model="m"))
    stored = store.get_nowait("k")
    assert stored is not None and stored.output == "kept"


def test_a_held_connection_binds_every_parameter_each_run_and_counts_changes_as_sqlite3_does(
    tmp_path: Path,
) -> None:
    # Its bindings are not cleared between runs (a call saved per statement): each run binds all
    # of them, so a wrong count is refused, as sqlite3 refuses it, instead of running with the
    # last run's values; and a read's rowcount is -1, as sqlite3's, without asking SQLite.
    path = tmp_path / "values.sqlite"
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
    held = _held_sqlite.held_connection(path, (), wait=1)
    assert isinstance(held, HeldConnection)
    insert, select = "INSERT INTO t VALUES (?, ?)", "SELECT v FROM t WHERE k = ?"
    for db in (plain, held):
        with pytest.raises(sqlite3.ProgrammingError, match="Incorrect number of bindings"):
            db.execute(insert, ("only the key",))
    assert held.execute(insert, ("a", "kept")).rowcount == 1
    assert held.execute(insert, ("b", None)).rowcount == 1  # NULL, not the last run's "kept"
    assert held.executemany(insert, [("c", 1), ("d", 2.5)]).rowcount == 2
    for db in (plain, held):
        assert db.execute(select, ("b",)).fetchone() == (None,)
        assert db.execute(select, ("a",)).rowcount == -1
    assert plain.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [
        ("a", "kept"), ("b", None), ("c", 1), ("d", 2.5),
    ]  # fmt: skip
    held.close()
    plain.close()


def test_a_held_connections_one_key_read_and_write_bind_text_and_end_their_transactions(
    tmp_path: Path,
) -> None:
    # The store's read and write on the loop (`lookup`, `write`): fewer calls into SQLite than
    # `execute`, the written value still text (a worker of before, or sqlite3, reads a str), and
    # each statement reset, so a row read leaves no read transaction open behind it.
    path = tmp_path / "values.sqlite"
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    held = _held_sqlite.held_connection(path, ("PRAGMA busy_timeout = 0",), wait=1)
    assert isinstance(held, HeldConnection)
    insert, select = (
        "INSERT INTO t VALUES (?, ?) ON CONFLICT DO NOTHING",
        "SELECT v FROM t WHERE k = ?",
    )
    assert held.write(insert, "a", "é ✓".encode()) == 1
    assert held.write(insert, "a", b"second") == 0  # the first stays
    assert held.lookup(select, "a") == "é ✓".encode() and held.lookup(select, "b") is None
    assert held.write(insert, "e", b"") == 1 and held.lookup(select, "e") == b""
    assert plain.execute("SELECT v, typeof(v) FROM t WHERE k = 'a'").fetchone() == ("é ✓", "text")
    # No read transaction left open by the row read: a checkpoint copies and restarts the log.
    assert plain.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0)
    with pytest.raises(sqlite3.ProgrammingError, match="1 parameter"):
        held.lookup(insert, "x")
    with pytest.raises(sqlite3.ProgrammingError, match="2 parameters"):
        held.write(select, "x", b"")
    plain.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        held.write(insert, "x", b"y")
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    plain.execute("COMMIT")
    assert held.write(insert, "x", b"y") == 1  # the statement was reset
    held.close()
    plain.close()


def test_a_result_stored_on_the_loop_is_text_stamped_with_the_time_it_was_written(
    tmp_path: Path,
) -> None:
    # The loop's statements read the time in SQLite instead of binding it: a row's age is still
    # the clock's, and a result older than the TTL is still neither served nor kept over.
    path = tmp_path / "checkpoints.sqlite"
    store = SqliteCheckpoints(path, ttl=60)
    before = time.time()
    assert store.put_nowait("k", LeafResult(output="kept", model="m"))
    store.put_answer_nowait("a", b'{"id": 1}')
    after = time.time()
    plain = sqlite3.connect(path, isolation_level=None)
    kind, age = plain.execute("SELECT typeof(result), created_at FROM checkpoints").fetchone()
    assert kind == "text" and before - 0.01 <= age <= after + 0.01
    (answered,) = plain.execute("SELECT created_at FROM answers").fetchone()
    assert before - 0.01 <= answered <= after + 0.01
    plain.execute("UPDATE checkpoints SET created_at = created_at - 59")
    assert store.get_nowait("k") is not None
    plain.execute("UPDATE checkpoints SET created_at = created_at - 2")
    assert store.get_nowait("k") is None and store.get("k") is None
    assert store.put_nowait("k", LeafResult(output="new", model="m"))
    stored = store.get_nowait("k")
    assert stored is not None and stored.output == "new"
    plain.close()
