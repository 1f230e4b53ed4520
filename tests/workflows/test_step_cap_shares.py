"""The shares of a run's free steps its nested runs are lent (see `durapipe.runtime.Steps`): the
branches of a parallel that may grow (a batch, an agent) split the free steps among them; since
patch `durapipe.exact-static-shares` a branch that cannot grow is lent none, so one large batch
beside a few small fixed branches may use what they leave. Runs recorded before split the free
steps among all the nested branches, and replay as they ran."""

from __future__ import annotations

import pytest

import durapipe as dp
from durapipe.runtime._steps import EXACT_SHARES_PATCH, KNOWN_LISTS_PATCH
from durapipe.workflows import _workflow
from tests.support import (
    EACH_SQUARE,
    SQUARE_TOOL,
    TWO_INPUTS,
    TWO_LISTS,
    WIDE_BESIDE_FIXED,
    history_events,
    patch_markers,
    replays_clean,
    run_or_failure,
)

CAP = "DURAPIPE_MAX_RUN_STEPS"
# One branch a batch over `numbers` (1 step, and then one per number), three fixed branches of
# 3 steps each (the branch, its two squares): the run counts 10 steps when it starts.
PIPES = "pipes:" + EACH_SQUARE + SQUARE_TOOL + WIDE_BESIDE_FIXED
NUMBERS = list(range(150))
REFUSED = "batch pipe 'each' over the 150 items of 'numbers' would start 150 steps, more than the"


async def _wide(
    client: dp.Client, pipeline: dp.Pipeline, queue: str
) -> tuple[str, dp.RunResult | dp.StepFailed]:
    return await run_or_failure(client, pipeline, "wide", {"numbers": NUMBERS, "n": 3}, queue)


async def _replays(client: dp.Client, run_id: str) -> None:
    await replays_clean(client, run_id, histories=5)  # the run and its four branches' runs


async def test_a_large_batch_beside_small_fixed_branches_gets_the_steps_they_leave(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a cap of 200 the run needs 160 steps. Split evenly among the four nested branches,
    # the batch's share was at most 123 of the 190 free (47 had the cap been known when the fixed
    # branches were lent theirs), and it refused the 150 the run had room for.
    monkeypatch.setenv(CAP, "200")
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id, result = await _wide(client, pipeline, task_queue)
    assert isinstance(result, dp.RunResult), result
    assert result.output == {
        "big": [n * n for n in NUMBERS], "one": 9, "two": 9, "three": 9
    }  # fmt: skip
    # The batch's list is known when it is lent: it is lent what it needs (patch known-list-shares).
    markers = [EXACT_SHARES_PATCH, KNOWN_LISTS_PATCH]
    assert patch_markers(await history_events(client, run_id)) == markers
    await _replays(client, run_id)

    # Run in-process, the same run fits the same cap.
    local = await dp.run_local(pipeline, "wide", {"numbers": NUMBERS, "n": 3})
    assert local.output == result.output


async def test_a_batch_past_what_the_fixed_branches_leave_is_refused_naming_the_numbers(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cap 150: the run counts 10 steps, the batch is lent the other 140, and refuses its 150.
    monkeypatch.setenv(CAP, "150")
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id, result = await _wide(client, pipeline, task_queue)
    assert isinstance(result, dp.StepFailed), result
    assert (result.path, result.cause_type) == ("big", "durapipe.RunTooLarge")
    assert result.cause == (
        f"{REFUSED} 140 this nested run has left of the steps this worker lets one run start "
        "(DURAPIPE_MAX_RUN_STEPS); make the run smaller, or raise the setting on the workers"
    )
    with pytest.raises(dp.StepFailed, match=f"{REFUSED} 140 this nested run has left"):
        await dp.run_local(pipeline, "wide", {"numbers": NUMBERS, "n": 3})
    await _replays(client, run_id)


async def test_a_run_recorded_before_the_change_split_evenly_and_replays_as_it_ran(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code before the change, as a worker of the previous release ran it: the patch unknown.
    before = _workflow._TemporalRuntime.patched

    def patched(self: _workflow._TemporalRuntime, change: str) -> bool:
        # Neither change (known-list-shares came later, and would lend the batch its 150).
        return False if change in (EXACT_SHARES_PATCH, KNOWN_LISTS_PATCH) else before(self, change)

    monkeypatch.setenv(CAP, "200")
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    with monkeypatch.context() as old:
        old.setattr(_workflow._TemporalRuntime, "patched", patched)
        async with dp.build_worker(client, task_queue=task_queue):
            run_id, result = await _wide(client, pipeline, task_queue)
    assert isinstance(result, dp.StepFailed), result
    assert result.cause_type == "durapipe.RunTooLarge"
    assert f"{REFUSED} 123 this nested run has left" in result.cause
    assert patch_markers(await history_events(client, run_id)) == []
    await _replays(client, run_id)  # this code, asked the patch, finds no marker: as it ran


async def _two(
    address: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dp.Client, str, dp.RunResult | dp.StepFailed]:
    monkeypatch.setenv(CAP, "200")
    pipeline = dp.load_yaml(TWO_LISTS)
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=queue):
        run_id, result = await run_or_failure(client, pipeline, "two", TWO_INPUTS, queue)
    return client, run_id, result


async def test_batches_over_lists_the_parallel_holds_are_lent_what_they_need(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cap 200, the run needs 172. Split evenly, each batch was lent 99 of the 198 free steps and
    # the one over 150 items was refused; each is now lent what its items need (150, 20).
    client, run_id, result = await _two(temporal_address, task_queue, monkeypatch)
    assert isinstance(result, dp.RunResult), result
    assert result.output == {"a": [n * n for n in range(150)], "b": [n * n for n in range(20)]}
    assert patch_markers(await history_events(client, run_id)) == [KNOWN_LISTS_PATCH]
    await replays_clean(client, run_id, histories=3)
    local = await dp.run_local(dp.load_yaml(TWO_LISTS), "two", TWO_INPUTS)
    assert local.output == result.output


async def test_batches_recorded_before_known_lists_split_evenly_and_replay_as_they_ran(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _workflow._TemporalRuntime.patched

    def patched(self: _workflow._TemporalRuntime, change: str) -> bool:
        return False if change == KNOWN_LISTS_PATCH else before(self, change)

    with monkeypatch.context() as old:
        old.setattr(_workflow._TemporalRuntime, "patched", patched)
        client, run_id, result = await _two(temporal_address, task_queue, monkeypatch)
    assert isinstance(result, dp.StepFailed), result
    assert "150 steps, more than the 99 this nested run has left" in result.cause
    assert patch_markers(await history_events(client, run_id)) == []
    await replays_clean(client, run_id, histories=3)
