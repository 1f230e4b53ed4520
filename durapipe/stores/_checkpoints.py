"""The checkpoint store: a leaf's result kept under a content-addressed key, first writer wins.

Before a leaf calls a provider (or a tool), it looks its key up here; after a success it writes the
result with a conditional write. So an activity retried after its worker died between "the provider
answered" and "Temporal recorded it" returns the stored result instead of paying again, and a
re-driven run (``durapipe retry``) skips every step that already succeeded.

Where the store lives comes from ``DURAPIPE_CHECKPOINTS``:

- unset: a SQLite file at ``$XDG_CACHE_HOME/durapipe/checkpoints.sqlite`` (``~/.cache/...``);
- a file path: a SQLite file there (workers on one host share it);
- ``redis://host:port/db``: a Redis server, for workers on several hosts;
- ``off``: no checkpoints.

With payload encryption on (``DURAPIPE_ENCRYPTION_KEYS``), results are stored encrypted with the
same keys; a new SQLite file is created readable by its owner only (0600). Results are kept for
``DURAPIPE_CHECKPOINT_TTL`` (default ``30d``): older ones are no longer served, and
``durapipe checkpoints prune`` deletes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from temporalio import activity

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.runtime._calls import (
    AgentTurnCall,
    LeafCall,
    LeafResult,
    LlmCall,
    ToolCall,
    result_json,
)
from durapipe.security._codec import EncryptionCodec, encryption_from_env
from durapipe.spec._base import parse_duration
from durapipe.stores._answers import keeping_answers
from durapipe.stores._held_sqlite import held_connection
from durapipe.stores._keys import canonical_json, llm_document
from durapipe.stores._memo import memoized_result
from durapipe.stores._paths import CHECKPOINTS_ENV, default_path, is_off, is_redis, unwritable
from durapipe.stores._schema import CHECKPOINTS, migrate

T = TypeVar("T")

MEMO_SCOPE = "memo"  # the scope of pipes with `memoize: true`: shared by every run
KEY_VERSION = 2  # bump when what goes into a key changes, so old entries stop matching


class CheckpointStore(Protocol):
    """Where leaf results are kept between attempts, workers and runs."""

    def get(self, key: str) -> LeafResult | None:
        """The result stored under ``key``, if any."""
        ...

    def put(self, key: str, result: LeafResult) -> bool:
        """Store ``result`` under ``key`` unless a result is already there; True if this one won."""
        ...


def checkpoint_key(
    call: LeafCall, messages: list[dict[str, str]] | None = None, *, namespace: str | None = None
) -> str:
    """The content-addressed key of a leaf call (one function for Temporal and local runs).

    It hashes the namespace (by default the running activity's; in a local run the namespace the
    CLI would use, so local runs share memoised answers with that namespace's workers), the run
    scope (the run id and the run's own random scope, which a re-drive keeps and a new run with the
    same id does not; or ``memo`` for pipes with ``memoize: true``), the step path, the kind, and
    what the call sends: model, rendered messages, settings and output schema for an llm call;
    function and arguments for a tool call; the conversation and the tools offered for an agent
    turn; the pipe and its inputs (blob references name their content) for extract and image.
    """
    pipe = call.pipe
    memoize = memoized(call)
    if namespace is None:
        namespace = activity.info().namespace if activity.in_activity() else local_namespace()
    if type(call) is LlmCall:  # most leaves: the same document, spliced (see `llm_document`)
        text = llm_document(call, messages, namespace, MEMO_SCOPE if memoize else None, KEY_VERSION)
        return hashlib.sha256(text.encode()).hexdigest()
    content: dict[str, Any] = {
        "v": KEY_VERSION,
        "namespace": namespace,
        "scope": MEMO_SCOPE if memoize else [call.run_id, call.scope],
        # A memoised result may serve the same content at any step of any run.
        "path": None if memoize else call.path,
        "kind": pipe.kind,
        "output": getattr(pipe, "output", None),  # a registered kind may have none
    }
    if isinstance(call, LlmCall | ToolCall | AgentTurnCall):
        content["structures"] = {n: s.model_dump(mode="json") for n, s in call.structures.items()}
    if isinstance(call, LlmCall):
        content |= {"model": call.pipe.model, "messages": messages, "settings": call.pipe.settings}
    elif isinstance(call, ToolCall):
        content |= {"function": call.pipe.function, "args": call.inputs}
    elif isinstance(call, AgentTurnCall):
        content |= {
            "model": call.pipe.model,
            "settings": call.pipe.settings,
            "turn": call.turn,
            "messages": call.messages,
            "tools": call.tools,
        }
    else:
        content |= {"pipe": pipe.model_dump(mode="json"), "inputs": call.inputs}
    text = canonical_json(content)
    return hashlib.sha256(text.encode()).hexdigest()


def local_namespace() -> str:
    """The namespace a local run's checkpoints belong to: ``TEMPORAL_NAMESPACE``, else default."""
    return os.environ.get("TEMPORAL_NAMESPACE") or "default"


def memoized(call: LeafCall) -> bool:
    """Whether the call's pipe shares its results across runs (``memoize: true``)."""
    return isinstance(call, LlmCall | ToolCall) and call.pipe.memoize


TTL_ENV = "DURAPIPE_CHECKPOINT_TTL"
DEFAULT_TTL = 30 * 86400.0


def configured_ttl() -> float:
    """How long results are kept, from ``DURAPIPE_CHECKPOINT_TTL`` (default 30 days).

    Raises:
        ConfigError: the setting is not a duration.
    """
    raw = (settings().checkpoint_ttl or "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        return parse_duration(raw)
    except ValueError as err:
        raise ConfigError(f"{TTL_ENV}: {err}") from None


class _Codec:
    """How results become stored text and back: JSON, sealed when encryption is on."""

    def __init__(self, codec: EncryptionCodec | None) -> None:
        # Without keys, a codec that seals nothing but still recognises sealed text: a worker
        # without the keys fails on a sealed result instead of parsing it as plain JSON.
        self.codec = codec if codec is not None else EncryptionCodec({})

    def dump(self, result: LeafResult) -> str:
        # The activity then sends the same JSON to Temporal without dumping it again.
        return self.codec.seal_text(result_json(result).decode())

    def dump_utf8(self, result: LeafResult) -> bytes:
        # `dump` as UTF-8, for the loop's connection, which binds it as text: the JSON's own
        # bytes when nothing is sealed (no decode here and encode again when bound).
        data = result_json(result)
        return data if self.codec.current is None else self.codec.seal_text(data.decode()).encode()

    def load(self, text: str | bytes, key: str) -> LeafResult:
        if isinstance(text, bytes):
            text = text.decode()
        text = self.codec.open_text(text, what=f"the checkpoint {key[:16]}")
        return LeafResult.model_validate_json(text)

    def dump_bytes(self, data: bytes) -> str:
        # A kept provider answer is a JSON document (see `durapipe.adapters._answers`): stored as
        # it is, not base64-encoded again (a third larger). Other bytes go in base64, as every
        # row did before; a row that starts with "{" (never a base64 character) is JSON.
        text = _json_text(data)
        if text is None:
            text = base64.b64encode(data).decode()
        return self.codec.seal_text(text)

    def load_bytes(self, text: str | bytes, key: str) -> bytes:
        if isinstance(text, bytes):
            text = text.decode()
        text = self.codec.open_text(text, what=f"the kept provider answer {key[:23]}")
        return text.encode() if text.startswith("{") else base64.b64decode(text)


def _json_text(data: bytes) -> str | None:
    """``data`` as text if it reads back as the same bytes and is marked as JSON by its "{"."""
    if not data.startswith(b"{"):
        return None
    try:
        return data.decode()  # strict UTF-8: what decodes encodes back to the same bytes
    except UnicodeDecodeError:
        return None


class SqliteCheckpoints:
    """Checkpoints in a SQLite file: the embedded default, shared by the workers of one host.

    Args:
        path: the file; created readable by its owner only when missing.
        codec: encrypts results at rest (None: plain JSON).
        ttl: seconds a result is served after it was stored (default `configured_ttl`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: EncryptionCodec | None = None,
        ttl: float | None = None,
    ) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):
                # Created 0600 before SQLite opens it: its -wal and -shm files take the same mode.
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as err:  # `--local` and `checkpoints prune` open it with no start-up check
            raise unwritable(CHECKPOINTS.variable, self.path.parent, err) from None
        self._codec = _Codec(codec)
        self.ttl = configured_ttl() if ttl is None else ttl
        self._lock = threading.Lock()
        # The tables, created or brought up from an earlier durapipe's layout (see `_schema`).
        migrate(self.path, CHECKPOINTS)
        # One connection for threads, which may wait for another process's write (the lock
        # serialises the threads), and one for the event loop, which never waits (`get_nowait`).
        self._db = _connect(self.path, timeout=30)
        self._loop_lock = threading.Lock()
        # Its calls keep the GIL where they can (see `_held_sqlite`): with sqlite3's, each step
        # let a thread waiting for the GIL (litellm's pool) take it and hold the loop up. A WAL
        # checkpoint syncs the file to disk: the loop's commits leave it to a thread.
        held = held_connection(
            self.path,
            ("PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout = 0", "PRAGMA wal_autocheckpoint=0"),
            wait=SETUP_WAIT_S,
        )
        self._loop_db: Any = held
        # The loop's read and write of one key: the held connection's own, or sqlite3's.
        self._loop_lookup: Callable[[str, str], str | bytes | None]
        self._loop_write: Callable[[str, str, bytes], int]
        if held is not None:
            self._loop_lookup, self._loop_write = held.lookup, held.write
        else:
            plain = _connect(self.path, timeout=0, autocommit=True)
            plain.execute("PRAGMA wal_autocheckpoint=0")
            self._loop_db = plain
            self._loop_lookup = functools.partial(_plain_lookup, plain)
            self._loop_write = functools.partial(_plain_write, plain)
        # The statements, with the TTL written in and the time read by SQLite (see `_lookup_sql`).
        self._lookup = _lookup_sql("checkpoints", "result", self.ttl)
        self._insert = _insert_sql("checkpoints", "result", self.ttl)
        self._replace = self._insert.split(" WHERE ")[0]  # the same write, unconditional
        self._lookup_answer = _lookup_sql("answers", "answer", self.ttl)
        self._insert_answer = _insert_sql("answers", "answer", self.ttl)
        self._commits = 0
        self._checkpointer: threading.Thread | None = None

    def get(self, key: str) -> LeafResult | None:
        """The result stored under ``key``, if any (and younger than the TTL)."""
        with self._lock:
            row = self._db.execute(self._lookup, (key,)).fetchone()
        return self._codec.load(row[0], key) if row else None

    def put(self, key: str, result: LeafResult) -> bool:
        """Store ``result`` unless ``key`` holds a live result; True if this one won."""
        text = self._codec.dump(result)
        with self._lock, self._db:
            return bool(self._db.execute(self._insert, (key, text)).rowcount == 1)

    def put_over_cut(self, key: str, result: LeafResult) -> bool:
        """Store ``result`` unless ``key`` holds a live result that is whole; True if this one went
        in. A memoised step's whole answer replaces a cut one an earlier durapipe shared (see
        `durapipe.stores._memo`); two writers still leave exactly one: the read and the write are
        one transaction, which holds the file's write lock from its start (sealed or not, a
        stored result says it was cut only once opened)."""
        text = self._codec.dump(result)
        with self._lock, self._db:  # committed at its end, rolled back on an error
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(self._lookup, (key,)).fetchone()
            won = row is None or self._codec.load(row[0], key).truncated
            if won:
                self._db.execute(self._replace, (key, text))
        return won

    def prune(self, older_than: float | None = None) -> int:
        """Delete results (and kept answers) stored more than ``older_than`` seconds ago
        (default: the TTL); returns how many results went."""
        cutoff = time.time() - (self.ttl if older_than is None else older_than)
        with self._lock, self._db:
            self._db.execute("DELETE FROM answers WHERE created_at < ?", (cutoff,))
            return self._db.execute(
                "DELETE FROM checkpoints WHERE created_at < ?", (cutoff,)
            ).rowcount

    def get_nowait(self, key: str) -> LeafResult | None:
        """Like `get`, on the calling thread; raises `BlockingIOError` rather than wait."""
        text = self._without_waiting(self._loop_lookup, self._lookup, key)
        return None if text is None else self._codec.load(text, key)

    def put_nowait(self, key: str, result: LeafResult) -> bool:
        """Like `put`, on the calling thread; raises `BlockingIOError` rather than wait."""
        text = self._codec.dump_utf8(result)
        won = self._without_waiting(self._loop_write, self._insert, key, text) == 1
        self._count_commits(1)
        return won

    def _count_commits(self, results: int) -> None:
        # The loop's connection never copies its log into the file (that syncs it): a thread
        # does, once about WAL_CHECKPOINT_EVERY results went in.
        self._commits += results
        if self._commits >= WAL_CHECKPOINT_EVERY:
            self._commits = 0
            # One at a time: a slow copy (a slow disk) does not queue more behind it.
            if self._checkpointer is None or not self._checkpointer.is_alive():
                self._checkpointer = threading.Thread(
                    target=self._wal_checkpoint, name="durapipe-wal"
                )
                self._checkpointer.start()

    def put_many(self, results: Mapping[str, LeafResult]) -> int:
        """`put` each result, in one transaction; how many won."""
        with self._lock, self._db:
            return self._insert_rows(self._db, results)

    def put_many_nowait(self, results: Mapping[str, LeafResult]) -> int:
        """Like `put_many`, on the calling thread; raises `BlockingIOError` rather than wait."""
        won = self._without_waiting(self._insert_many, self._loop_db, results)
        self._count_commits(len(results))
        return won

    def get_answer(self, key: str) -> bytes | None:
        """The provider answer kept under ``key`` (see `durapipe.adapters._answers`), if any."""
        with self._lock:
            row = self._db.execute(self._lookup_answer, (key,)).fetchone()
        return self._codec.load_bytes(row[0], key) if row else None

    def put_answer(self, key: str, answer: bytes) -> None:
        """Keep a provider answer under ``key``; the first one kept stays."""
        text = self._codec.dump_bytes(answer)
        with self._lock, self._db:
            self._db.execute(self._insert_answer, (key, text))

    def get_answer_nowait(self, key: str) -> bytes | None:
        """Like `get_answer`, on the calling thread; raises `BlockingIOError` rather than wait."""
        text = self._without_waiting(self._loop_lookup, self._lookup_answer, key)
        return None if text is None else self._codec.load_bytes(text, key)

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        """Like `put_answer`, on the calling thread; raises `BlockingIOError` rather than wait."""
        text = self._codec.dump_bytes(answer).encode()
        self._without_waiting(self._loop_write, self._insert_answer, key, text)
        self._commits += 1

    def _wal_checkpoint(self) -> None:
        # The event loop keeps committing meanwhile, and so may other workers on the file. The log
        # starts over at the first write after a checkpoint that copied all of it; commits landing
        # during the copy (a busy worker's usually do) keep it from starting over, and a log that
        # never starts over grows by every result. So a log past WAL_MAX_FRAMES (the checkpoint
        # reports the frames it held when it began) is copied in TRUNCATE mode with the loop's
        # writes held back (they go to a thread for those milliseconds): TRUNCATE also holds back
        # other processes' writers while it copies, then empties the file. It waits at most
        # HELD_CHECKPOINT_WAIT_MS for their transactions (and readers) to end; one that does not
        # leaves the log as it is until the next checkpoint tries again.
        with self._lock, contextlib.suppress(sqlite3.Error):
            _, logged, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if logged > WAL_MAX_FRAMES:
                with self._loop_lock:
                    waits = self._db.execute("PRAGMA busy_timeout").fetchone()[0]
                    self._db.execute(f"PRAGMA busy_timeout = {HELD_CHECKPOINT_WAIT_MS}")
                    try:
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    finally:
                        self._db.execute(f"PRAGMA busy_timeout = {int(waits)}")

    def _without_waiting(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` (on the loop's connection) on the calling thread, or `BlockingIOError`."""
        # A WAL read never waits for a writer, and an uncontended write takes well under a
        # millisecond without an fsync: cheaper than the hop to a thread. Only a lock held by
        # another thread or process (SQLITE_BUSY at once, with timeout 0) sends the caller there.
        # A plain call, not a generator context manager: this runs twice per step.
        if not self._loop_lock.acquire(blocking=False):
            raise BlockingIOError("the checkpoint store is in use by another thread")
        try:
            # The loop connection is in autocommit mode: each work is one statement, which is
            # its own transaction (committed, or rolled back on an error).
            return work(*args)
        except sqlite3.OperationalError as err:
            if getattr(err, "sqlite_errorcode", None) in _BUSY:
                raise BlockingIOError(str(err)) from None
            raise
        finally:
            self._loop_lock.release()

    def _insert_many(self, db: sqlite3.Connection, results: Mapping[str, LeafResult]) -> int:
        # The loop's connection is in autocommit mode: one explicit transaction for the batch,
        # so its results cost one commit (one WAL append) instead of one each.
        db.execute("BEGIN IMMEDIATE")
        try:
            won = self._insert_rows(db, results)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return won

    def _insert_rows(self, db: sqlite3.Connection, results: Mapping[str, LeafResult]) -> int:
        # One executemany, not a statement per result (bench.local_ab: 13-18 us per step less). Its
        # rowcount sums the rows each insert changed, 1 for a result that won and 0 for a key
        # holding a live result: how many won, as one write per result counted them.
        if not results:
            return 0
        rows = [(key, self._codec.dump(r)) for key, r in results.items()]
        return int(db.executemany(self._insert, rows).rowcount)


# The time in seconds since the epoch, as SQLite reads it (the clock `time.time` reads, to the
# millisecond): binding it from Python was two more calls into SQLite per read and write (each
# a few thousand instructions through ctypes, see `_held_sqlite`) for every step.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def _real(seconds: float) -> str:
    """``seconds`` as a SQL literal (a TTL without end as one larger than any float)."""
    return repr(float(seconds)) if math.isfinite(seconds) else "9e999"


def _lookup_sql(table: str, column: str, ttl: float) -> str:
    """The read of one key's ``column``: served only while younger than ``ttl``."""
    return f"SELECT {column} FROM {table} WHERE key = ? AND created_at >= {_NOW} - {_real(ttl)}"


def _insert_sql(table: str, column: str, ttl: float) -> str:
    """The conditional write of a key's ``column``: first writer wins, and an expired value
    counts as none."""
    return (
        f"INSERT INTO {table} (key, {column}, created_at) VALUES (?, ?, {_NOW}) "
        f"ON CONFLICT (key) DO UPDATE SET {column} = excluded.{column}, "
        f"created_at = excluded.created_at "
        f"WHERE {table}.created_at < excluded.created_at - {_real(ttl)}"
    )


def _plain_lookup(db: sqlite3.Connection, sql: str, key: str) -> str | None:
    """`HeldConnection.lookup` on a ``sqlite3`` connection (``DURAPIPE_SQLITE_HELD=off``)."""
    row = db.execute(sql, (key,)).fetchone()
    return None if row is None else row[0]


def _plain_write(db: sqlite3.Connection, sql: str, key: str, text: bytes) -> int:
    """`HeldConnection.write` on a ``sqlite3`` connection: the text bound as text."""
    return db.execute(sql, (key, text.decode())).rowcount


_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
# About SQLite's automatic checkpoint interval (1,000 WAL pages) at a few pages per result.
WAL_CHECKPOINT_EVERY = 250
WAL_MAX_FRAMES = 4000  # pages of 4 KiB: a log of ~16 MB is copied with the loop's commits held back
HELD_CHECKPOINT_WAIT_MS = 200  # how long that copy waits for other workers' transactions to end


def _connect(path: Path, *, timeout: float, autocommit: bool = False) -> sqlite3.Connection:
    # Autocommit: a statement is its own transaction, without the BEGIN and COMMIT statements
    # the sqlite3 module otherwise wraps a write in (the loop connection writes one per call).
    db = sqlite3.connect(
        path,
        check_same_thread=False,
        timeout=SETUP_WAIT_S,
        isolation_level=None if autocommit else "DEFERRED",
    )
    # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a commit survives the death
    # of its process (the case checkpoints exist for), only a power loss may lose the last ones,
    # and then a step is paid again. FULL (an fsync per leaf) cost milliseconds per step.
    # It reads the schema, which another worker opening the file at the same moment may lock for
    # an instant (switching it to WAL): so it may wait, even on a connection that never waits
    # later (the loop's answered "database is locked" here, failing a worker's start).
    db.execute("PRAGMA synchronous=NORMAL")
    if timeout != SETUP_WAIT_S:
        db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return db


SETUP_WAIT_S = 30.0  # how long opening a store may wait for another worker's lock on the file


class RedisCheckpoints:
    """Checkpoints in Redis, for workers on several hosts (``SET NX``: first writer wins)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "durapipe:checkpoint:",
        codec: EncryptionCodec | None = None,
        ttl: float | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                f"{CHECKPOINTS_ENV}={url} needs the redis client: pip install 'durapipe[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self._codec = _Codec(codec)
        # Redis expires each result itself: no prune needed.
        self.ttl = configured_ttl() if ttl is None else ttl
        self._redis = redis.Redis.from_url(url)

    def get(self, key: str) -> LeafResult | None:
        """The result stored under ``key``, if any."""
        raw = self._redis.get(self.prefix + key)
        return self._codec.load(raw, key) if raw is not None else None

    def put(self, key: str, result: LeafResult) -> bool:
        """Store ``result`` unless ``key`` is taken; True if this one won."""
        stored = self._codec.dump(result)
        return bool(self._redis.set(self.prefix + key, stored, nx=True, ex=max(1, int(self.ttl))))

    def put_over_cut(self, key: str, result: LeafResult) -> bool:
        """`SqliteCheckpoints.put_over_cut`, the key watched from the read to the write (redis's
        `transaction`): a writer that lost the race reads again, and finds a whole answer."""
        stored, name = self._codec.dump(result), self.prefix + key
        won = [False]

        def write(pipe: Any) -> None:  # again from the start after a lost race
            raw = pipe.get(name)  # watched: answered at once
            won[0] = raw is None or self._codec.load(raw, key).truncated
            if won[0]:
                pipe.multi()
                pipe.set(name, stored, ex=max(1, int(self.ttl)))

        self._redis.transaction(write, name)
        return won[0]

    def get_answer(self, key: str) -> bytes | None:
        """The provider answer kept under ``key`` (see `durapipe.adapters._answers`), if any."""
        raw = self._redis.get(self.prefix + ANSWERS_LAYOUT + key)
        return self._codec.load_bytes(raw, key) if raw is not None else None

    def put_answer(self, key: str, answer: bytes) -> None:
        """Keep a provider answer under ``key``; the first one kept stays."""
        stored = self._codec.dump_bytes(answer)
        key = self.prefix + ANSWERS_LAYOUT + key
        self._redis.set(key, stored, nx=True, ex=max(1, int(self.ttl)))

    def prune(self, older_than: float | None = None) -> int:
        """Delete what an earlier durapipe stored without an expiry; returns how many keys went.

        Everything this version stores expires by itself. Keys under the prefix without an expiry
        were written before retention (results) or before answers moved under `ANSWERS_LAYOUT`
        (raw answers, never read since): like the rows of before retention in a SQLite file, they
        count as expired.

        Raises:
            ConfigError: ``older_than`` was given. A stored value carries no time it was written
                (and a key's remaining TTL says its age only if the TTL setting never changed),
                so an age cannot be honoured: refused rather than ignored.
        """
        if older_than is not None:
            raise ConfigError(
                "pruning by age (--older-than) does not apply to a Redis checkpoint store "
                f"({CHECKPOINTS_ENV}): Redis expires each result by itself once the retention it "
                f"was stored with has passed ({TTL_ENV}), and prune there deletes "
                "only keys stored without an expiry, by a durapipe of before retention; run "
                "`durapipe checkpoints prune` without --older-than"
            )
        gone = 0
        batch: list[bytes] = []
        # SCAN, not KEYS: a store shared by many workers can be large, and KEYS blocks the server.
        for key in self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                gone += self._delete_unbounded(batch)
                batch = []
        return gone + self._delete_unbounded(batch)

    def _delete_unbounded(self, keys: list[bytes]) -> int:
        if not keys:
            return 0
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.ttl(key)
            ttls = pipe.execute()
        # -1: no expiry (-2: gone meanwhile). Today's writes set theirs in the same SET, so a key
        # seen without one here was written by an earlier durapipe.
        unbounded = [key for key, ttl in zip(keys, ttls, strict=True) if ttl == -1]
        return int(self._redis.unlink(*unbounded)) if unbounded else 0


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Answers kept by an earlier durapipe sit under ``<prefix>answer:...`` as raw bytes, without an
# expiry; today's are base64 (sealed with encryption on). Read as today's, an old one would be
# served as garbage: today's go under their own name, and the old ones are never read.
ANSWERS_LAYOUT = "v1:"


def open_store(
    where: str | None = None, codec: EncryptionCodec | None = None
) -> CheckpointStore | None:
    """The store named by ``where`` (else ``DURAPIPE_CHECKPOINTS``), or None when ``off``.

    Results are encrypted with ``codec`` (default: the payload keys of the environment, see
    `durapipe.security._codec.encryption_from_env`; none set, none used).
    """
    where = where if where is not None else settings().checkpoints
    if is_off(where):
        return None
    codec = codec if codec is not None else encryption_from_env()
    if is_redis(where):
        return RedisCheckpoints(where, codec=codec)
    return SqliteCheckpoints(where or default_path(), codec=codec)


def prune_checkpoints(older_than: float | None = None, where: str | None = None) -> int:
    """Delete stored results older than ``older_than`` seconds (default: the TTL); how many went.

    A Redis store expires what this version stores by itself; there, prune deletes the results
    and answers an earlier durapipe stored without an expiry (see `RedisCheckpoints.prune`), and
    refuses ``older_than``. With checkpoints off there is nothing to do.

    Raises:
        ConfigError: the store cannot be opened, the TTL setting is not a duration, or
            ``older_than`` was given for a Redis store.
    """
    store = open_store(where)
    return store.prune(older_than) if isinstance(store, SqliteCheckpoints | RedisCheckpoints) else 0


@functools.cache
def store_for(where: str) -> CheckpointStore | None:
    """The store ``where`` names, opened once per process (workers check it at start, see
    `durapipe.stores._writable`, and their steps use the same one)."""
    return open_store(where)


def configured_store() -> CheckpointStore | None:
    """The store of this process's ``DURAPIPE_CHECKPOINTS``, opened once per setting."""
    return store_for(settings().checkpoints)


async def checkpointed(
    store: CheckpointStore | None,
    call: LeafCall,
    key: str,
    attempt: int,
    compute: Callable[[], Awaitable[LeafResult]],
) -> LeafResult:
    """The stored result of ``key`` (marked ``cache_hit``), else ``compute()``'s, then stored.

    A hit of a retried attempt keeps the usage of the call it replays, which this run did pay
    for. A memoised pipe's call goes through `durapipe.stores._memo.memoized_result` (a hit costs
    this run nothing; a cut-off answer is not shared).
    """
    if store is not None and memoized(call):
        return await memoized_result(store, call, key, attempt, compute)
    if store is not None:
        # A store that may block (a network call, a lock held elsewhere) is read and written on
        # a thread, unless it has `get_nowait` and `put_nowait` twins (SQLite's, a local run's)
        # that answer at once or raise BlockingIOError. Plain calls, not helper coroutines or
        # context managers: this runs for every leaf.
        get_nowait = getattr(store, "get_nowait", None)
        stored: LeafResult | None = None
        blocked = get_nowait is None
        if get_nowait is not None:
            try:
                stored = get_nowait(key)
            except BlockingIOError:
                blocked = True
        if blocked:
            stored = await asyncio.to_thread(store.get, key)
        if stored is not None:
            return stored.model_copy(update={"cache_hit": True, "attempt": attempt})
    with keeping_answers(store):
        result = await compute()
    if store is not None:
        put_nowait = getattr(store, "put_nowait", None)
        blocked = put_nowait is None
        if put_nowait is not None:
            try:
                put_nowait(key, result)
            except BlockingIOError:
                blocked = True
        if blocked:
            await asyncio.to_thread(store.put, key, result)
    return result
