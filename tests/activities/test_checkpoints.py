"""The checkpoint store: key derivation, and first-writer-wins on SQLite and on a real Redis server."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.activities import (
    CheckpointStore,
    RedisCheckpoints,
    SqliteCheckpoints,
    checkpoint_key,
    open_store,
)
from durapipe.activities._checkpoints import WAL_CHECKPOINT_EVERY, checkpointed
from durapipe.adapters import LeafResult, LlmCall, ToolCall
from durapipe.pipes import LlmPipe, ToolPipe
from durapipe.testing import FakeProvider
from tests.chain import write_chain


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port (installed by `make redis-server`), stopped by its pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make redis-server`")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                RedisCheckpoints(url).get("ping")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


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
    assert keys == sorted(f"run:{task_queue}:{c.idempotency_key}" for c in fake.calls)
    stored = redis_store.get(fake.calls[-1].idempotency_key or "")
    assert stored is not None and stored.output == result.output
