"""A local run's checkpoints: its own steps' results written in batches, memoised ones at once."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

import durapipe as dp
import durapipe.local
from durapipe.local import RunCheckpoints
from durapipe.runtime import LeafResult, StepRecord
from durapipe.stores import SqliteCheckpoints
from tests import control_tools


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint file of this test's own, as ``DURAPIPE_CHECKPOINTS``."""
    file = tmp_path / "checkpoints.sqlite"
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(file))
    return file


def rows(file: Path) -> list[str]:
    """The results stored in ``file``, as another process would read them."""
    with sqlite3.connect(file) as db:
        return [r[0] for r in db.execute("SELECT result FROM checkpoints ORDER BY created_at")]


def chain(steps: int, *, last: str = "") -> dp.Pipeline:
    """A sequence of ``steps`` llm steps on the offline model, then ``last`` (a YAML step)."""
    lines = "".join(f"      - {{pipe: ask, name: s{i}}}\n" for i in range(steps)) + last
    return dp.load_yaml(
        f"""
pipes:
  chain:
    kind: sequence
    inputs: {{question: text}}
    steps:
{lines}
  ask:
    kind: llm
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
  fail:
    kind: tool
    function: tests.flaky_tools:refuse
    inputs: {{question: text}}
    retry: {{max_attempts: 1}}
"""
    )


async def test_a_local_run_writes_every_step_result_to_the_store_by_its_end(
    checkpoints: Path,
) -> None:
    seen: list[int] = []

    def on_step(record: StepRecord) -> None:
        seen.append(len(rows(checkpoints)))

    result = await dp.run_local(chain(3), "chain", {"question": "tides"}, on_step=on_step)
    assert seen == [0, 0, 0]  # held by the run while it goes, off the steps' path
    stored = [LeafResult.model_validate_json(r).output for r in rows(checkpoints)]
    assert len(stored) == 3 and stored[-1] == result.output  # the last step's is the run's


async def test_a_failed_local_run_still_writes_the_results_of_its_succeeded_steps(
    checkpoints: Path,
) -> None:
    failing = chain(2, last="      - {pipe: fail}\n")
    with pytest.raises(dp.StepFailed, match="ConnectionError: refused: tides"):
        await dp.run_local(failing, "chain", {"question": "tides"})
    assert len(rows(checkpoints)) == 2


async def test_a_long_local_run_writes_its_results_in_batches_as_it_goes(
    checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durapipe.local, "FLUSH_EVERY", 3)
    seen: list[int] = []

    def on_step(record: StepRecord) -> None:
        seen.append(len(rows(checkpoints)))

    await dp.run_local(chain(7), "chain", {"question": "tides"}, on_step=on_step)
    assert seen == [0, 0, 3, 3, 3, 6, 6]
    assert len(rows(checkpoints)) == 7


async def test_a_memoised_step_is_in_the_store_when_it_ends_for_other_runs_to_read(
    checkpoints: Path,
) -> None:
    pipeline = dp.pipeline(dp.tool(control_tools.counted, memoize=True))
    seen: list[int] = []

    def on_step(record: StepRecord) -> None:
        seen.append(len(rows(checkpoints)))

    n = random.randrange(10**9)
    await dp.run_local(pipeline, "counted", {"n": n}, on_step=on_step)
    assert seen == [1]


def test_a_later_attempt_reads_what_its_run_holds_and_never_asks_the_store_for_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    own = RunCheckpoints(store)

    def asked(key: str) -> None:
        raise AssertionError(f"the store was read for {key}")

    monkeypatch.setattr(store, "get_nowait", asked)
    assert own.get_nowait("new") is None
    assert own.put_nowait("k", LeafResult(output="first", model="m")) is True
    assert own.put_nowait("k", LeafResult(output="second", model="m")) is False
    held = own.get_nowait("k")
    assert held is not None and held.output == "first"


async def test_a_run_ending_while_another_process_writes_waits_for_the_file_on_a_thread(
    tmp_path: Path,
) -> None:
    file = tmp_path / "checkpoints.sqlite"
    own = RunCheckpoints(SqliteCheckpoints(file))
    own.put_nowait("k", LeafResult(output="kept", model="m"))
    other = sqlite3.connect(file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock
    flush = asyncio.create_task(own.flush())
    ticks = 0
    while not flush.done() and ticks < 20:  # the loop keeps running while the write waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not flush.done() and ticks == 20
    held = own.get_nowait("k")  # still served to the run while it is being written
    assert held is not None and held.output == "kept"
    other.execute("COMMIT")
    await flush
    assert [LeafResult.model_validate_json(r).output for r in rows(file)] == ["kept"]
    stored = own.get_nowait("k")
    assert stored is not None and stored.output == "kept"


async def test_a_store_that_cannot_take_the_results_neither_fails_the_run_nor_hides_its_error(
    checkpoints: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(self: SqliteCheckpoints, results: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SqliteCheckpoints, "put_many_nowait", full)
    monkeypatch.setattr(durapipe.local, "FLUSH_EVERY", 1)  # batches as the run goes fail too
    result = await dp.run_local(chain(2), "chain", {"question": "tides"})
    assert result.output and [s.status for s in result.steps] == ["succeeded"] * 2
    assert [(s.attempts, s.cache_hit) for s in result.steps] == [(1, False)] * 2
    assert "database or disk is full" in caplog.text and str(checkpoints) in caplog.text
    failing = chain(1, last="      - {pipe: fail}\n")
    with pytest.raises(dp.StepFailed, match="ConnectionError"):
        await dp.run_local(failing, "chain", {"question": "tides"})


async def test_a_file_that_refused_a_batch_is_tried_again_only_at_the_runs_end(
    checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each try writes everything held: trying at every step would rewrite a growing batch.
    tries: list[int] = []

    def full(self: SqliteCheckpoints, results: dict[str, LeafResult]) -> int:
        tries.append(len(results))
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SqliteCheckpoints, "put_many_nowait", full)
    monkeypatch.setattr(durapipe.local, "FLUSH_EVERY", 1)
    result = await dp.run_local(chain(5), "chain", {"question": "tides"})
    assert [s.status for s in result.steps] == ["succeeded"] * 5
    assert tries == [1, 5]  # the first batch, then all five at the run's end
