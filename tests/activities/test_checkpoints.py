"""The checkpoint store: key derivation, and first-writer-wins on SQLite and on a real Redis server."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

import durapipe as dp
from durapipe._errors import ConfigError
from durapipe.activities import run_agent_turn, run_extract, run_image
from durapipe.runtime import AgentTurnCall, ExtractCall, ImageCall, LeafResult, LlmCall, ToolCall
from durapipe.spec import AgentPipe, ExtractPipe, ImagePipe, LlmPipe, ToolPipe
from durapipe.spec._deck import ModelDeck
from durapipe.stores import (
    CheckpointStore,
    RedisCheckpoints,
    SqliteCheckpoints,
    checkpoint_key,
    open_store,
)
from durapipe.stores import _checkpoints as checkpoints_module
from durapipe.stores._checkpoints import (
    ANSWERS_LAYOUT,
    WAL_CHECKPOINT_EVERY,
    WAL_MAX_FRAMES,
    checkpointed,
)
from durapipe.testing import FakeProvider
from tests.chain import write_chain
from tests.support import cli_env, durapipe_command


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "sqlite":
        return SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    url: str = request.getfixturevalue("redis_url")
    return RedisCheckpoints(url, prefix=f"test:{tmp_path.name}:")


def test_the_first_writer_wins(store: CheckpointStore) -> None:
    assert store.get("k") is None
    assert store.put("k", LeafResult(output="first", model="m")) is True
    assert store.put("k", LeafResult(output="second", model="m")) is False
    stored = store.get("k")
    assert stored is not None and stored.output == "first"


def test_racing_writers_store_exactly_one_result(store: CheckpointStore) -> None:
    won: list[int] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        if store.put("race", LeafResult(output=n)):
            won.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = store.get("race")
    assert len(won) == 1 and stored is not None and stored.output == won[0]


async def test_a_busy_sqlite_file_is_waited_for_on_a_thread_not_on_the_event_loop(
    tmp_path: Path,
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    call = llm_call()
    other = sqlite3.connect(tmp_path / "checkpoints.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock
    with pytest.raises(BlockingIOError):
        store.put_nowait("k", LeafResult(output="x", model="m"))

    async def compute() -> LeafResult:
        return LeafResult(output="answer", model="m")

    write = asyncio.create_task(checkpointed(store, call, "k", 1, compute))
    ticks = 0
    while not write.done() and ticks < 20:  # the loop keeps running while the write waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not write.done() and ticks == 20
    other.execute("COMMIT")
    assert (await write).output == "answer"
    stored = store.get_nowait("k")
    assert stored is not None and stored.output == "answer"


def test_a_write_on_the_event_loop_is_committed_before_it_returns(tmp_path: Path) -> None:
    # What a checkpoint is for: once put_nowait returns, another worker (another connection)
    # already sees the result, and a store read after a failed write finds nothing half-written.
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    other = sqlite3.connect(tmp_path / "checkpoints.sqlite", isolation_level=None)
    assert store.put_nowait("k", LeafResult(output="kept", model="m"))
    store.put_answer_nowait("a", b"answer")
    assert other.execute("SELECT count(*) FROM checkpoints WHERE key = 'k'").fetchone() == (1,)
    assert other.execute("SELECT count(*) FROM answers WHERE key = 'a'").fetchone() == (1,)
    assert not store.put_nowait("k", LeafResult(output="second", model="m"))  # first one stays
    stored = SqliteCheckpoints(tmp_path / "checkpoints.sqlite").get("k")
    assert stored is not None and stored.output == "kept"


def test_a_batch_is_one_transaction_in_which_the_first_writer_of_each_key_still_wins(
    tmp_path: Path,
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    other = sqlite3.connect(tmp_path / "checkpoints.sqlite", isolation_level=None)
    assert store.put_nowait("k", LeafResult(output="first", model="m"))
    batch = {"k": LeafResult(output="second", model="m"), "j": LeafResult(output="j", model="m")}
    assert store.put_many_nowait(batch) == 1
    assert store.put_many({"j": LeafResult(output="again", model="m")}) == 0
    assert other.execute("SELECT count(*) FROM checkpoints").fetchone() == (2,)
    kept, j = store.get("k"), store.get("j")
    assert kept is not None and kept.output == "first" and j is not None and j.output == "j"
    other.execute("BEGIN IMMEDIATE")  # another worker writes: nothing of the batch goes in
    with pytest.raises(BlockingIOError):
        store.put_many_nowait({"x": LeafResult(output="x", model="m")})
    other.execute("COMMIT")
    assert store.get("x") is None


def test_a_batch_counts_each_result_that_won_an_expired_one_included(tmp_path: Path) -> None:
    # A batch is one executemany: what it reports must still be the number of keys it took, an
    # expired result's key among them, a live result's key not, on both of its paths.
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite", ttl=60)
    other = sqlite3.connect(tmp_path / "checkpoints.sqlite", isolation_level=None)
    for key in ("live", "old", "live2", "old2"):
        assert store.put(key, LeafResult(output=f"first {key}", model="m"))
    other.execute("UPDATE checkpoints SET created_at = 0 WHERE key IN ('old', 'old2')")
    assert store.put_many_nowait({}) == 0 and store.put_many({}) == 0
    first = {k: LeafResult(output=f"new {k}", model="m") for k in ("live", "old", "a", "b")}
    assert store.put_many_nowait(first) == 3
    second = {k: LeafResult(output=f"new {k}", model="m") for k in ("live2", "old2", "c", "a")}
    assert store.put_many(second) == 2
    outputs = dict(other.execute("SELECT key, json_extract(result, '$.output') FROM checkpoints"))
    assert outputs == {
        "live": "first live",
        "old": "new old",
        "live2": "first live2",
        "old2": "new old2",
        "a": "new a",
        "b": "new b",
        "c": "new c",
    }


def test_the_write_ahead_log_is_checkpointed_off_the_event_loop_and_stays_bounded(
    tmp_path: Path,
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    wal = tmp_path / "checkpoints.sqlite-wal"
    result = LeafResult(output="x" * 2000, model="m")
    for n in range(WAL_CHECKPOINT_EVERY - 1):
        store.put_nowait(f"k{n}", result)
    one_round = wal.stat().st_size  # no checkpoint yet: the loop's commits never run one
    for n in range(WAL_CHECKPOINT_EVERY - 1, 4 * WAL_CHECKPOINT_EVERY):
        store.put_nowait(f"k{n}", result)
        for thread in threading.enumerate():
            if thread.name == "durapipe-wal":
                thread.join()  # let each checkpoint finish, as it would between steps
    # Without the background checkpoints the log would hold all four rounds of pages.
    assert wal.stat().st_size < 2 * one_round
    assert store.get(f"k{4 * WAL_CHECKPOINT_EVERY - 1}") is not None


@pytest.mark.parametrize("writer", ["this worker", "another worker"])
def test_a_long_log_starts_over_though_commits_land_during_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    # A busy worker stores results while the background checkpoint copies the log, and other
    # workers on the file may too. The log starts over only at a write that finds it all copied:
    # one commit landing during each checkpoint kept a busy worker's log from ever starting over,
    # and it grew by every result.
    monkeypatch.setattr(checkpoints_module, "WAL_CHECKPOINT_EVERY", 10**9)  # the test runs them
    path = tmp_path / "checkpoints.sqlite"
    wal = tmp_path / "checkpoints.sqlite-wal"
    store = SqliteCheckpoints(path)
    # Another worker's store: its own connections and locks on the same file.
    other = store if writer == "this worker" else SqliteCheckpoints(path)
    result = LeafResult(output="x", model="m")
    n = 0
    while _frames(wal) <= WAL_MAX_FRAMES:  # a log just past the bound (~17 MB), never copied
        store.put_nowait(f"k{n}", result)
        n += 1
    started_over = _log_salts(wal)
    stop = threading.Event()
    written = threading.Condition()
    writes = 0

    def keep_writing() -> None:
        nonlocal writes
        # Until the checkpoint is over, and bounded whatever the disk's speed (~60 MB of log). A
        # write every millisecond at most, as a busy worker's results land: flat out, an idle
        # machine's writer reached the bound before the checkpoint of the other store ended.
        while not stop.wait(0.001) and writes < 5000:
            try:
                other.put_nowait(f"w{writes}", result)
            except BlockingIOError:  # held back during the checkpoint: the step's thread writes
                other.put(f"w{writes}", result)
            with written:
                writes += 1
                written.notify_all()

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        with written:
            assert written.wait_for(lambda: writes > 0, timeout=30)
        store._wal_checkpoint()  # as the loop's commits start one, the writer's landing meanwhile
        with written:
            # The second write from now began after the checkpoint ended.
            after = writes
            assert written.wait_for(lambda: writes >= min(after + 2, 5000), timeout=30)
        stop.set()
        thread.join()
        assert 0 < after < 5000  # the writer was still writing when the checkpoint ended
        other.put("after", result)  # the log starts over at a write
        assert _log_salts(wal) != started_over
        assert _frames(wal) < WAL_MAX_FRAMES // 2
    finally:
        stop.set()
        thread.join()
        for file in tmp_path.glob("checkpoints.sqlite*"):  # pytest keeps three runs' folders
            file.unlink(missing_ok=True)


def _frames(wal: Path) -> int:
    """How many frames (4 KiB pages) the log holds."""
    size = wal.stat().st_size if wal.exists() else 0
    return max(0, size - WAL_HEADER) // (FRAME_HEADER + 4096)


WAL_HEADER, FRAME_HEADER = 32, 24  # bytes, in SQLite's write-ahead log format


def _log_salts(wal: Path) -> bytes:
    """The log header's salts: a log that starts over gets new ones (whoever restarts it)."""
    with wal.open("rb") as log:
        return log.read(WAL_HEADER)[16:24]


def test_open_store_reads_the_setting(tmp_path: Path, redis_url: str) -> None:
    assert open_store("off") is None
    assert isinstance(open_store(str(tmp_path / "c.sqlite")), SqliteCheckpoints)
    assert isinstance(open_store(redis_url), RedisCheckpoints)


def llm_call(run_id: str = "r1", path: str = "a", **pipe: object) -> LlmCall:
    spec = LlmPipe.model_validate({"model": "openai/m", "prompt": "hi", **pipe})
    return LlmCall(run_id=run_id, path=path, pipe_name="a", pipe=spec)


def test_keys_change_with_what_the_call_sends_and_where_it_runs() -> None:
    messages = [{"role": "user", "content": "hi"}]
    key = checkpoint_key(llm_call(), messages)
    assert key == checkpoint_key(llm_call(), [dict(m) for m in messages])
    different = [
        checkpoint_key(llm_call(run_id="r2"), messages),
        checkpoint_key(llm_call(path="b"), messages),
        checkpoint_key(llm_call(model="openai/other"), messages),
        checkpoint_key(llm_call(settings={"temperature": 0.5}), messages),
        checkpoint_key(llm_call(output="integer"), messages),
        checkpoint_key(llm_call(), [{"role": "user", "content": "hello"}]),
    ]
    assert len({key, *different}) == len(different) + 1
    # A memoised pipe shares answers across runs and steps.
    assert checkpoint_key(llm_call(memoize=True), messages) == checkpoint_key(
        llm_call(run_id="r2", path="b", memoize=True), messages
    )


def test_tool_keys_hash_the_function_and_its_arguments() -> None:
    def call(**inputs: object) -> ToolCall:
        spec = ToolPipe(function="m:f", inputs={"x": "integer"})
        return ToolCall(run_id="r", path="t", pipe_name="t", pipe=spec, inputs=inputs)

    assert checkpoint_key(call(x=1)) == checkpoint_key(call(x=1)) != checkpoint_key(call(x=2))


async def test_workers_checkpoint_into_redis(
    temporal_address: str, task_queue: str, tmp_path: Path, redis_url: str
) -> None:
    redis_store = RedisCheckpoints(redis_url, prefix=f"run:{task_queue}:")
    async with FakeProvider() as fake:
        pipeline = dp.load(write_chain(tmp_path / "chain.yaml", fake.base_url, steps=2))
        client = await dp.connect(temporal_address, pipeline=pipeline, checkpoints=redis_store)
        async with dp.build_worker(client, task_queue=task_queue):
            result = await dp.run(client, pipeline, "chain", {"topic": "x"}, task_queue=task_queue)
    keys = sorted(k.decode() for k in redis_store._redis.keys(f"run:{task_queue}:*"))
    # Each step's result, and each provider answer as it arrived (see test_answers.py).
    # Answers go under their own layout's name: an earlier durapipe's raw ones are never read.
    answers = f"run:{task_queue}:{ANSWERS_LAYOUT}answer:"
    results = [k for k in keys if not k.startswith(answers)]
    assert results == sorted(f"run:{task_queue}:{c.idempotency_key}" for c in fake.calls)
    assert len(keys) - len(results) == len(fake.calls)
    stored = redis_store.get(fake.calls[-1].idempotency_key or "")
    assert stored is not None and stored.output == result.output


def test_agent_turn_keys_hash_the_conversation_and_the_tools() -> None:
    def call(turn: int = 1, content: str = "hi", tools: int = 0) -> AgentTurnCall:
        pipe = AgentPipe(model="openai/m", prompt="hi")
        offered = [{"type": "function", "function": {"name": f"t{n}"}} for n in range(tools)]
        messages = [{"role": "user", "content": content}]
        return AgentTurnCall(
            run_id="r", path="a", pipe_name="a", pipe=pipe, turn=turn, messages=messages,
            tools=offered,
        )  # fmt: skip

    keys = {checkpoint_key(c) for c in (call(), call(turn=2), call(content="ho"), call(tools=1))}
    assert len(keys) == 4 and checkpoint_key(call()) in keys


async def test_an_agent_turn_retried_after_its_answer_was_stored_asks_the_model_once(
    tmp_path: Path,
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    async with FakeProvider() as fake:
        pipe = AgentPipe(model="openai/gpt-agent", prompt="hi")
        deck = ModelDeck({"openai/gpt-agent": {"api_base": fake.base_url}})
        call = AgentTurnCall(
            run_id="r", path="agent", pipe_name="agent", pipe=pipe, turn=1,
            messages=[{"role": "user", "content": "Plan the trip."}],
        )  # fmt: skip
        first = await run_agent_turn(call, 1, store, deck)
        again = await run_agent_turn(call, 2, store, deck)
    assert len(fake.calls) == 1  # the retry was served from the store
    assert fake.calls[0].idempotency_key == checkpoint_key(call)
    assert (first.cache_hit, again.cache_hit) == (False, True)
    assert again.output == first.output and again.attempt == 2


@pytest.mark.usefixtures("blob_dir")
async def test_image_and_extract_results_are_checkpointed(tmp_path: Path) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    image = ImageCall(
        run_id="r",
        path="cover",
        pipe_name="cover",
        pipe=ImagePipe(prompt="a lighthouse", size="64x64"),
    )
    drawn = await run_image(image, 1, store)
    assert (await run_image(image, 2, store)).model_dump(exclude={"attempt", "cache_hit"}) == (
        drawn.model_dump(exclude={"attempt", "cache_hit"})
    )
    assert (await run_image(image, 2, store)).cache_hit
    read = ExtractCall(
        run_id="r", path="read", pipe_name="read", pipe=ExtractPipe(), inputs={"scan": drawn.output}
    )
    first = await run_extract(read, 1, store)
    again = await run_extract(read, 2, store)
    assert (first.cache_hit, again.cache_hit) == (False, True) and again.output == first.output


def test_a_redis_answer_kept_raw_by_an_earlier_durapipe_is_never_served(
    redis_url: str, tmp_path: Path
) -> None:
    store = RedisCheckpoints(redis_url, prefix=f"test:{tmp_path.name}:", ttl=3600)
    # How an earlier durapipe kept an answer: the raw body, under the step's answer key.
    store._redis.set(f"test:{tmp_path.name}:answer:k", b'{"choices": []}')
    assert store.get_answer("answer:k") is None  # a miss, not base64 of JSON read as garbage
    store.put_answer("answer:k", b'{"id": 2}')
    assert store.get_answer("answer:k") == b'{"id": 2}'


def test_prune_deletes_what_an_earlier_durapipe_left_in_redis_without_an_expiry(
    redis_url: str,
) -> None:
    # A database of its own: the command below prunes the default prefix.
    url = redis_url.rsplit("/", 1)[0] + "/3"
    store = RedisCheckpoints(url, ttl=3600)
    prefix = store.prefix
    raw = store._redis
    # What earlier durapipes stored, without an expiry: a raw answer (before answers moved under
    # ANSWERS_LAYOUT) and a plain result (before retention).
    raw.set(f"{prefix}answer:{'a' * 64}", b'{"choices": []}')
    raw.set(f"{prefix}{'b' * 64}", LeafResult(output="old").model_dump_json())
    raw.set("someone-else:answer:x", b"not ours")  # another program's key in the same database
    store.put("c" * 64, LeafResult(output="today"))
    store.put_answer("answer:" + "d" * 64, b'{"id": 1}')
    pruned = subprocess.run(
        durapipe_command("checkpoints", "prune"),
        capture_output=True, text=True, env=cli_env(DURAPIPE_CHECKPOINTS=url), timeout=60,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == "pruned 2 checkpoints"
    assert raw.get(f"{prefix}answer:{'a' * 64}") is None
    assert raw.get(f"{prefix}{'b' * 64}") is None
    assert raw.get("someone-else:answer:x") == b"not ours"
    assert store.get("c" * 64) == LeafResult(output="today")
    assert store.get_answer("answer:" + "d" * 64) == b'{"id": 1}'
    assert store.prune() == 0  # nothing left without an expiry


def test_prune_in_redis_refuses_an_age_it_cannot_honour_and_deletes_nothing(
    redis_url: str,
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/4"  # a database of its own: the default prefix
    store = RedisCheckpoints(url, ttl=3600)
    old = f"{store.prefix}{'e' * 64}"
    store._redis.set(old, LeafResult(output="old").model_dump_json())  # no expiry
    store.put("f" * 64, LeafResult(output="today"))
    pruned = subprocess.run(
        durapipe_command("checkpoints", "prune", "--older-than", "1s"),
        capture_output=True, text=True, env=cli_env(DURAPIPE_CHECKPOINTS=url), timeout=60,
    )  # fmt: skip
    assert pruned.returncode == 2 and pruned.stdout == ""
    assert pruned.stderr.strip() == (
        "error: pruning by age (--older-than) does not apply to a Redis checkpoint store "
        "(DURAPIPE_CHECKPOINTS): Redis expires each result by itself once the retention it was "
        "stored with has passed (DURAPIPE_CHECKPOINT_TTL), and prune there deletes only keys "
        "stored without an expiry, by a durapipe of before retention; run `durapipe checkpoints "
        "prune` without --older-than"
    )
    assert store._redis.get(old) is not None  # refused: nothing deleted
    assert store.get("f" * 64) == LeafResult(output="today")
    with pytest.raises(ConfigError):
        store.prune(older_than=0)


def test_prune_in_redis_takes_a_prefix_literally(redis_url: str, tmp_path: Path) -> None:
    mine = RedisCheckpoints(redis_url, prefix=f"t[{tmp_path.name}]*:")
    other = RedisCheckpoints(redis_url, prefix=f"t{tmp_path.name[0]}x:")  # matches as a glob
    mine._redis.set(f"{mine.prefix}answer:old", b"raw")
    other._redis.set(f"{other.prefix}answer:old", b"raw")
    assert mine.prune() == 1
    assert other._redis.get(f"{other.prefix}answer:old") == b"raw"


def test_a_slow_log_checkpoint_does_not_queue_more_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    release = threading.Event()
    started: list[str] = []

    def slow_checkpoint() -> None:  # a copy on a slow disk
        started.append(threading.current_thread().name)
        release.wait(30)

    monkeypatch.setattr(store, "_wal_checkpoint", slow_checkpoint)
    try:
        for _ in range(3):
            store._count_commits(WAL_CHECKPOINT_EVERY)
        assert len(started) <= 1
        checkpointer = store._checkpointer
        assert checkpointer is not None
    finally:
        release.set()
    checkpointer.join(30)
    store._count_commits(WAL_CHECKPOINT_EVERY)  # the last one ended: the next may start
    following = store._checkpointer
    assert following is not None and following is not checkpointer
    following.join(30)
    assert len(started) == 2
