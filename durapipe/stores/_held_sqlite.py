"""A SQLite connection whose calls keep the GIL: the event loop's connection to the checkpoint store.

Python's ``sqlite3`` lets go of the GIL around every call into SQLite (each step and reset of a
statement: two to four per checkpoint read or write). A worker's event loop reads and writes its
checkpoints on its own thread (a read or write takes microseconds), and litellm runs part of every
call (``completion``, which ``acompletion`` hands to the loop's default thread pool) on other
threads that wait for the GIL: each time the loop let go, one of them took it and ran until it
blocked or Python's switch interval (5 ms) handed it back, the loop held up meanwhile and every
handover paid in CPU (about 140 us of CPU per batch item in ``bench.item_ab``, and several times
the store's own time in wall time).

This module calls the same SQLite library ``sqlite3`` uses through `ctypes.PyDLL`, whose calls keep
the GIL, with the few operations the store's loop connection needs (prepared statements, text,
real, integer, blob and null values). It is used only when that library is the one already loaded
in the process (``RTLD_NOLOAD``): two copies of SQLite in one process on one file would not see
each other's POSIX locks (SQLite's "multiple copies" hazard). Elsewhere (a Python with SQLite
linked in statically, Windows) `held_connection` returns None and the store keeps ``sqlite3``, as
it does with ``DURAPIPE_SQLITE_HELD=off``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from durapipe._settings import settings

_OK, _ROW, _DONE = 0, 100, 101
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
_INTEGER, _FLOAT, _TEXT, _BLOB = 1, 2, 3, 4
_OPEN_READWRITE = 0x00000002
_CHANGING = {"INSERT", "UPDATE", "DELETE", "REPLACE"}  # statements whose rowcount sqlite3 sets
_TRANSIENT = ctypes.c_void_p(-1)  # SQLite copies a bound value before the call returns


class HeldConnection:
    """The subset of a ``sqlite3.Connection`` in autocommit mode that the loop's store uses:
    ``execute(sql, params)`` (``.fetchone()``, ``.rowcount``) and ``executemany``. A statement's
    transaction is its own unless an explicit ``BEGIN`` opened one. Not thread-safe: the store
    calls it under its loop lock.

    Errors raise ``sqlite3.OperationalError`` with ``sqlite_errorcode`` set, as ``sqlite3`` does.
    """

    def __init__(self, lib: ctypes.PyDLL, path: Path) -> None:
        self._lib = lib
        self._db = ctypes.c_void_p()
        self._statements: dict[str, tuple[ctypes.c_void_p, int, bool]] = {}
        rc = lib.sqlite3_open_v2(os.fsencode(path), ctypes.byref(self._db), _OPEN_READWRITE, None)
        if rc != _OK:
            message = self._message() if self._db else f"error {rc}"
            self.close()
            raise _error(rc, f"cannot open {path}: {message}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        """Run one statement; its rows are read at once (the store's statements return one).

        Every parameter is bound on every run (a count that does not match raises
        ``sqlite3.ProgrammingError``, as ``sqlite3`` does), so a run never sees the last run's
        values and the bindings need no clearing; ``rowcount`` is SQLite's count of changed
        rows after an INSERT, UPDATE, DELETE or REPLACE and -1 after anything else (as
        ``sqlite3``'s): a read asks SQLite for nothing more. Each call through ctypes costs a
        few thousand instructions (``bench.worker_instructions``), so none is made in vain.
        """
        statement, parameters, changes = self._prepared(sql)
        if len(params) != parameters:
            raise sqlite3.ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses "
                f"{parameters}, and there are {len(params)} supplied."
            )
        lib = self._lib
        try:
            self._bind(statement, params)
            rows = []
            while (rc := lib.sqlite3_step(statement)) == _ROW:
                rows.append(self._row(statement))
            if rc != _DONE:
                raise _error(lib.sqlite3_extended_errcode(self._db), self._message())
            return _Result(rows, lib.sqlite3_changes(self._db) if changes else -1)
        finally:
            lib.sqlite3_reset(statement)

    def lookup(self, sql: str, key: str) -> bytes | None:
        """The first column of the first row of ``sql`` (one parameter, ``key``, bound as text)
        as its bytes, or None without a row: the store's read, in the fewest calls into SQLite
        (bind, step and reset; a row adds its text's pointer and size). Reset ends the read
        transaction whether or not a row was read."""
        statement, parameters, _ = self._prepared(sql)
        if parameters != 1:
            raise sqlite3.ProgrammingError(f"lookup takes a statement of 1 parameter: {sql}")
        lib = self._lib
        try:
            data = key.encode()
            rc = lib.sqlite3_bind_text(statement, 1, data, len(data), _TRANSIENT)
            if rc != _OK:
                raise _error(rc, self._message())
            rc = lib.sqlite3_step(statement)
            if rc == _ROW:
                pointer = lib.sqlite3_column_text(statement, 0)
                return ctypes.string_at(pointer, lib.sqlite3_column_bytes(statement, 0))
            if rc != _DONE:
                raise _error(lib.sqlite3_extended_errcode(self._db), self._message())
            return None
        finally:
            lib.sqlite3_reset(statement)

    def write(self, sql: str, key: str, text: bytes) -> int:
        """Run the changing statement ``sql`` with two text parameters, ``key`` and ``text``
        (UTF-8 bytes, bound as text, not as a blob); how many rows it changed. The store's write,
        in the fewest calls into SQLite (two binds, step, the change count, reset)."""
        statement, parameters, _ = self._prepared(sql)
        if parameters != 2:
            raise sqlite3.ProgrammingError(f"write takes a statement of 2 parameters: {sql}")
        lib = self._lib
        try:
            data = key.encode()
            rc = lib.sqlite3_bind_text(statement, 1, data, len(data), _TRANSIENT)
            if rc == _OK:
                rc = lib.sqlite3_bind_text(statement, 2, text, len(text), _TRANSIENT)
            if rc != _OK:
                raise _error(rc, self._message())
            if lib.sqlite3_step(statement) != _DONE:
                raise _error(lib.sqlite3_extended_errcode(self._db), self._message())
            return int(lib.sqlite3_changes(self._db))
        finally:
            lib.sqlite3_reset(statement)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> _Result:
        """Run one statement per row; ``rowcount`` sums the rows each changed."""
        changed = sum(self.execute(sql, row).rowcount for row in rows)
        return _Result([], changed)

    def close(self) -> None:
        """Finalize the statements and close the connection."""
        for statement, _, _ in self._statements.values():
            self._lib.sqlite3_finalize(statement)
        self._statements.clear()
        if self._db:
            self._lib.sqlite3_close_v2(self._db)
            self._db = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()

    def _prepared(self, sql: str) -> tuple[ctypes.c_void_p, int, bool]:
        """``sql``'s statement (prepared once per connection), how many parameters it takes, and
        whether it changes rows (its ``rowcount`` is read)."""
        prepared = self._statements.get(sql)
        if prepared is None:
            statement = ctypes.c_void_p()
            encoded = sql.encode()
            rc = self._lib.sqlite3_prepare_v2(
                self._db, encoded, len(encoded), ctypes.byref(statement), None
            )
            if rc != _OK:
                raise _error(self._lib.sqlite3_extended_errcode(self._db), self._message())
            changes = sql.lstrip().split(None, 1)[0].upper() in _CHANGING
            prepared = (statement, self._lib.sqlite3_bind_parameter_count(statement), changes)
            self._statements[sql] = prepared
        return prepared

    def _bind(self, statement: ctypes.c_void_p, params: Sequence[Any]) -> None:
        lib = self._lib
        for index, value in enumerate(params, start=1):
            # The store's values in the order they are most common: keys and JSON, times.
            if isinstance(value, str):
                data = value.encode()
                rc = lib.sqlite3_bind_text(statement, index, data, len(data), _TRANSIENT)
            elif isinstance(value, float):
                rc = lib.sqlite3_bind_double(statement, index, value)
            elif value is None:
                rc = lib.sqlite3_bind_null(statement, index)
            elif isinstance(value, bytes):
                rc = lib.sqlite3_bind_blob(statement, index, value, len(value), _TRANSIENT)
            elif isinstance(value, int):  # bool too, as sqlite3 binds it
                rc = lib.sqlite3_bind_int64(statement, index, value)
            else:
                raise TypeError(f"cannot bind a {type(value).__name__} to a SQLite statement")
            if rc != _OK:
                raise _error(rc, self._message())

    def _row(self, statement: ctypes.c_void_p) -> tuple[Any, ...]:
        lib = self._lib
        values: list[Any] = []
        for column in range(lib.sqlite3_column_count(statement)):
            kind = lib.sqlite3_column_type(statement, column)
            if kind == _INTEGER:
                values.append(lib.sqlite3_column_int64(statement, column))
            elif kind == _FLOAT:
                values.append(lib.sqlite3_column_double(statement, column))
            elif kind in (_TEXT, _BLOB):
                # The pointer first, then its size (SQLite's documented order).
                pointer = (
                    lib.sqlite3_column_text(statement, column)
                    if kind == _TEXT
                    else lib.sqlite3_column_blob(statement, column)
                )
                size = lib.sqlite3_column_bytes(statement, column)
                data = ctypes.string_at(pointer, size) if size else b""
                values.append(data.decode() if kind == _TEXT else data)
            else:
                values.append(None)
        return tuple(values)

    def _message(self) -> str:
        return (self._lib.sqlite3_errmsg(self._db) or b"").decode(errors="replace")


class _Result:
    """What `HeldConnection.execute` returns: like a ``sqlite3.Cursor`` after a statement."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def _error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code & 0xFF if code & 0xFF in _BUSY_CODES else code
    return error


def held_connection(path: Path, setup: Sequence[str], wait: float) -> HeldConnection | None:
    """A connection to ``path`` whose calls keep the GIL, with the ``setup`` statements run on it
    (retried for up to ``wait`` seconds while another connection locks the file: its busy timeout
    would wait holding the GIL), or None where such a connection cannot be had safely (the
    library ``sqlite3`` loaded is not a shared one this process can name)."""
    lib = _library() if settings().sqlite_held else None
    if lib is None:
        return None
    db = HeldConnection(lib, path)
    deadline = time.monotonic() + wait
    try:
        for sql in setup:
            while True:
                try:
                    db.execute(sql)
                    break
                except sqlite3.OperationalError as err:
                    busy = getattr(err, "sqlite_errorcode", None) in _BUSY_CODES
                    if not busy or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
    except BaseException:
        db.close()
        raise
    return db


_LIB: list[ctypes.PyDLL | None] = []


def _library() -> ctypes.PyDLL | None:
    if not _LIB:
        _LIB.append(_load())
    return _LIB[0]


def _load() -> ctypes.PyDLL | None:
    noload = getattr(os, "RTLD_NOLOAD", None)
    name = ctypes.util.find_library("sqlite3")
    if noload is None or name is None:
        return None
    try:
        # Already loaded by sqlite3 (RTLD_NOLOAD fails otherwise): the very same copy of SQLite.
        lib = ctypes.PyDLL(name, mode=noload | os.RTLD_NOW)
        major, minor, patch = sqlite3.sqlite_version_info
        if lib.sqlite3_libversion_number() != major * 1_000_000 + minor * 1000 + patch:
            return None
    except (OSError, AttributeError):
        return None
    _declare(lib)
    return lib


def _declare(lib: ctypes.PyDLL) -> None:
    p, i, i64, d, c = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_double,
        ctypes.c_char_p,
    )
    signatures: dict[str, tuple[list[Any], Any]] = {
        "sqlite3_open_v2": ([c, ctypes.POINTER(p), i, c], i),
        "sqlite3_prepare_v2": ([p, c, i, ctypes.POINTER(p), p], i),
        "sqlite3_step": ([p], i),
        "sqlite3_reset": ([p], i),
        "sqlite3_bind_parameter_count": ([p], i),
        "sqlite3_finalize": ([p], i),
        "sqlite3_close_v2": ([p], i),
        "sqlite3_changes": ([p], i),
        "sqlite3_extended_errcode": ([p], i),
        "sqlite3_errmsg": ([p], c),
        "sqlite3_bind_null": ([p, i], i),
        "sqlite3_bind_text": ([p, i, c, i, p], i),
        "sqlite3_bind_blob": ([p, i, c, i, p], i),
        "sqlite3_bind_int64": ([p, i, i64], i),
        "sqlite3_bind_double": ([p, i, d], i),
        "sqlite3_column_count": ([p], i),
        "sqlite3_column_type": ([p, i], i),
        "sqlite3_column_int64": ([p, i], i64),
        "sqlite3_column_double": ([p, i], d),
        "sqlite3_column_text": ([p, i], p),
        "sqlite3_column_blob": ([p, i], p),
        "sqlite3_column_bytes": ([p, i], i),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = None if name in _UNCONVERTED else argtypes
        function.restype = restype


# The calls of every step's read and write, whose arguments are already what C takes (a
# c_void_p statement or connection, ints that fit a C int, bytes for a char pointer, the
# c_void_p destructor): declared without argument types, ctypes passes them as they are instead
# of running each through its type's converter (a lookup that misses, 4.23 -> 3.72 us in one
# process, alternating). Their return types stay declared.
_UNCONVERTED = frozenset(
    {
        "sqlite3_bind_text",
        "sqlite3_step",
        "sqlite3_reset",
        "sqlite3_changes",
        "sqlite3_column_text",
        "sqlite3_column_bytes",
    }
)
