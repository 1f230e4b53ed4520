"""A memoised pipe's shared entry that is cut off at its output limit (an earlier durapipe left it
there) is replaced by the next whole answer, on every store backend, sealed or not: first writer
wins otherwise, and the memo key would hold the cut entry for its whole TTL."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.runtime import LeafResult, LlmCall
from durapipe.security import EncryptionCodec
from durapipe.spec import LlmPipe
from durapipe.stores import RedisCheckpoints, SqliteCheckpoints
from durapipe.stores._checkpoints import checkpoint_key, checkpointed

SEAL = EncryptionCodec({"k1": base64.b64decode(dp.security.new_encryption_key())})
CUT = LeafResult(output="Alpha, Be", model="m", truncated=True)
WHOLE = LeafResult(output="Alpha, Beta.", model="m")
Store = SqliteCheckpoints | RedisCheckpoints


@pytest.fixture(params=["sqlite", "sqlite-sealed", "redis", "redis-sealed"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens the store again at each call: a connection of its own, as another worker's."""
    codec = SEAL if request.param.endswith("-sealed") else None
    if request.param.startswith("sqlite"):
        return lambda: SqliteCheckpoints(tmp_path / "checkpoints.sqlite", codec=codec)
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisCheckpoints(url, prefix=f"test:{tmp_path.name}:", codec=codec)


@pytest.fixture
def store(opener: Callable[[], Store]) -> Store:
    return opener()


def _memoised(run_id: str) -> tuple[LlmCall, str]:
    pipe = LlmPipe(model="openai/m", prompt="List names.", memoize=True)
    call = LlmCall(run_id=run_id, path="names", pipe_name="names", pipe=pipe)
    return call, checkpoint_key(call, [{"role": "user", "content": "List names."}])


async def test_a_whole_answer_replaces_a_cut_one_left_under_the_memo_key(
    store: Store,
) -> None:
    first, key = _memoised("r1")
    assert store.put(key, CUT)  # what an earlier durapipe shared
    asked: list[str] = []

    async def ask(answer: LeafResult) -> LeafResult:
        asked.append(str(answer.output))
        return answer

    result = await checkpointed(store, first, key, 1, lambda: ask(WHOLE))
    assert (result.output, result.cache_hit) == ("Alpha, Beta.", False)
    stored = store.get(key)
    assert stored is not None and (stored.output, stored.truncated) == ("Alpha, Beta.", False)
    # The next run is served the whole answer at no cost, and asks nobody.
    later, _ = _memoised("r2")
    served = await checkpointed(store, later, key, 1, lambda: ask(LeafResult(output="paid")))
    assert (served.output, served.cache_hit) == ("Alpha, Beta.", True)
    assert asked == ["Alpha, Beta."]


def test_a_whole_shared_answer_is_never_replaced(store: Store) -> None:
    assert store.put("k", WHOLE)
    assert not store.put_over_cut("k", LeafResult(output="second", model="m"))
    stored = store.get("k")
    assert stored is not None and stored.output == "Alpha, Beta."


def test_racing_writers_over_a_cut_entry_leave_exactly_one_whole_answer(
    opener: Callable[[], Store],
) -> None:
    workers = [opener() for _ in range(8)]  # each on a connection of its own
    for race in range(10):  # the window between a read and a write is short: race it often
        key = f"race{race}"
        assert workers[0].put(key, CUT)
        won = _race(workers, key)
        stored = workers[0].get(key)
        assert len(won) == 1 and stored is not None, (race, won)
        assert (stored.output, stored.truncated) == (won[0], False)


def _race(workers: list[Store], key: str) -> list[int]:
    """Which of ``workers`` put a whole answer over ``key``'s cut one, all at once."""
    won: list[int] = []
    start = threading.Barrier(len(workers))

    def write(n: int) -> None:
        start.wait()
        if workers[n].put_over_cut(key, LeafResult(output=n, model="m")):
            won.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won
