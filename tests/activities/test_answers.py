"""Provider answers kept as they arrive: a step that died after its answer arrived, before its
checkpoint was written, is not paid for again (on SQLite and on a real Redis server)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from bench.chaos import unread_ports
from durapipe.activities import _llm, run_llm
from durapipe.stores import CheckpointStore, RedisCheckpoints, SqliteCheckpoints
from durapipe.testing import FakeProvider, Status
from tests.support import call_to, deck_for


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "sqlite":
        return SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    url: str = request.getfixturevalue("redis_url")
    return RedisCheckpoints(url, prefix=f"test:{tmp_path.name}:")


class Died(Exception):
    """What the worker's death looks like from inside this process."""


async def test_a_step_that_died_after_its_answer_arrived_is_not_paid_again(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeProvider() as fake:  # bills every request
        call, deck = call_to(), deck_for(fake.base_url)

        def die(response: object) -> object:
            raise Died  # the answer has arrived; the step's checkpoint is not written yet

        with monkeypatch.context() as patch:
            patch.setattr(_llm, "usage_of", die)
            with pytest.raises(Died):
                await run_llm(call, 1, store, deck)
        retried = await run_llm(call, 2, store, deck)
    assert len(fake.paid_calls()) == 1  # the retry got the kept answer, not a second completion
    assert retried.output == "Fake gpt-keep reply to: Name a colour."
    assert retried.usage.output_tokens > 0  # the kept answer's usage: this run did pay for it


async def test_an_answer_is_stored_once_as_json_and_rows_kept_in_base64_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    async with FakeProvider() as fake:
        call, deck = call_to(), deck_for(fake.base_url)

        def die(response: object) -> object:
            raise Died

        with monkeypatch.context() as patch:
            patch.setattr(_llm, "usage_of", die)
            with pytest.raises(Died):
                await run_llm(call, 1, store, deck)
        key, row = store._db.execute("SELECT key, answer FROM answers").fetchone()
        document = json.loads(row)  # the row is the kept document itself, not base64 of it
        assert "Fake gpt-keep reply to: Name a colour." in document["text"]  # the body as text
        # The format kept before: the body in base64 inside the JSON, all of it in base64 again.
        old = {**document, "body": base64.b64encode(document.pop("text").encode()).decode()}
        old_row = base64.b64encode(json.dumps(old).encode()).decode()
        with store._db:
            store._db.execute("UPDATE answers SET answer = ? WHERE key = ?", (old_row, key))
        retried = await run_llm(call, 2, store, deck)
    assert len(fake.paid_calls()) == 1  # the old row was read: no second completion
    assert retried.output == "Fake gpt-keep reply to: Name a colour."


async def test_only_successful_answers_are_kept_and_other_runs_ask_again(
    store: CheckpointStore,
) -> None:
    async with FakeProvider() as fake:
        fake.script("gpt-keep", [Status(500)])
        deck = deck_for(fake.base_url)
        with pytest.raises(Exception, match=r"500|Internal"):
            await run_llm(call_to(), 1, store, deck)
        await run_llm(call_to(), 2, store, deck)  # the 500 was not kept: asked again
        await run_llm(call_to(run_id="r2"), 1, store, deck)  # another run's own key
    assert [c.outcome for c in fake.calls] == ["status:500", "ok", "ok"]


class WatchingStore(SqliteCheckpoints):
    """A SQLite store that notes, at each answer it keeps, the bytes this process has not yet read
    from its connections to the provider (the kernel's receive queues, /proc/self/net/tcp)."""

    provider_port = 0
    unread_at_keep: list[frozenset[int]]

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        self.unread_at_keep.append(unread_ports(os.getpid(), self.provider_port))
        super().put_answer_nowait(key, answer)


async def test_an_answer_stays_in_the_socket_until_it_is_kept(tmp_path: Path) -> None:
    store = WatchingStore(tmp_path / "checkpoints.sqlite")
    store.unread_at_keep = []
    async with FakeProvider() as fake:
        store.provider_port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
        deck = deck_for(fake.base_url)
        await run_llm(call_to(), 1, store, deck)
        await run_llm(call_to(run_id="r2"), 1, store, deck)  # the same pooled connection
        after = unread_ports(os.getpid(), store.provider_port)
    # While the answer is written to the store its bytes are still unread in the socket (a worker
    # killed before the write leaves them there, visibly in flight); once kept, they are consumed.
    assert len(store.unread_at_keep) == 2
    assert all(ports for ports in store.unread_at_keep)
    assert not after
    assert [c.outcome for c in fake.calls] == ["ok", "ok"]
