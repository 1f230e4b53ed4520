"""A worker decodes each spec once: the runs of one spec share its object and its pipes' parts,
and each run's input reads exactly as the data converter reads it."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import pytest
from temporalio.common import RawValue

import durapipe as dp
from durapipe.adapters._plan import WORKFLOW_NAME, pipe_run
from durapipe.runtime._calls import BatchSlice, LlmCall, PipeRun
from durapipe.spec import PipeBase
from durapipe.spec._kinds import (
    Kind,
    UnknownPipe,
    kinds_generation,
    register_kind,
    unregister_kind,
)
from durapipe.worker import durapipe_converter
from durapipe.workflows import _workflow
from durapipe.workflows._workflow import _spec_key, _with_kept_spec
from tests.support import history_events

ASK = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", timeout=30)
MANY = dp.batch(
    "many", inputs={"questions": list[str]}, over="questions", item="question", pipe=ASK
)


def _runs() -> list[PipeRun]:
    """Inputs of every shape a workflow receives: a top-level run, a chunk of a batch, a run
    continued as new, one with a budget, without searchable totals, and one recorded before
    scopes and versions (only the fields it had)."""
    run = pipe_run(dp.pipeline(MANY), "many", {"questions": ["a", "b", "c"]})
    return [
        run,
        run.model_copy(
            update={
                "path": "many",
                "slice": BatchSlice(offset=100, items=[{"q": 1.5}, None], max_concurrency=3),
            }
        ),
        run.model_copy(update={"resume": {"turn": 2, "messages": [{"role": "user"}]}}),
        run.model_copy(update={"budget_usd": 0.25, "searchable_totals": False}),
        PipeRun.model_validate(
            {
                "run_id": "old-run",
                "pipe": "many",
                "spec": run.spec.model_dump(mode="json"),
                "inputs": {"questions": ["x"]},
            }
        ),
    ]


def _raw(value: object) -> RawValue:
    return RawValue(durapipe_converter().payload_converter.to_payload(value))


@pytest.mark.parametrize("index", range(5))
def test_a_kept_spec_reads_each_input_as_the_converter_does(index: int) -> None:
    run = _runs()[index]
    raw = _raw(run)
    decoded = durapipe_converter().payload_converter.from_payload(raw.payload, PipeRun)
    data, key = _spec_key(raw)
    assert key is not None
    kept = _with_kept_spec(data, decoded.spec)
    assert kept == decoded
    assert kept.model_dump_json() == decoded.model_dump_json()
    assert kept.model_fields_set == decoded.model_fields_set  # what a re-dump writes out


@pytest.mark.parametrize("index", range(5))
def test_a_kept_spec_reads_a_top_level_run_under_its_workflow_id(index: int) -> None:
    # A scheduled run's workflow id carries a suffix its stored input lacks: the run is read
    # under the workflow id, as the converter's run copied with it (`model_copy`) reads.
    run = _runs()[index]
    raw = _raw(run)
    decoded = durapipe_converter().payload_converter.from_payload(raw.payload, PipeRun)
    expected = decoded.model_copy(update={"run_id": "nightly-2026-11-28T02:00:00Z"})
    data, _ = _spec_key(raw)
    kept = _with_kept_spec(data, decoded.spec, "nightly-2026-11-28T02:00:00Z")
    assert kept == expected
    assert kept.model_dump_json() == expected.model_dump_json()
    assert kept.model_fields_set == expected.model_fields_set


def test_runs_of_one_spec_share_a_key_and_other_specs_do_not() -> None:
    run, chunk, *_ = _runs()
    other = pipe_run(dp.pipeline(MANY), "many", {"questions": ["z"]}, run_id="another")
    keys = {_spec_key(_raw(r))[1] for r in (run, chunk, other)}
    assert len(keys) == 1  # inputs, ids, slices and scopes differ; the spec does not
    slower = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", timeout=90)
    changed = pipe_run(
        dp.pipeline(dp.batch("many", inputs={"questions": list[str]}, over="questions",
                             item="question", pipe=slower)),
        "many",
        {"questions": ["a"]},
    )  # fmt: skip
    assert _spec_key(_raw(changed))[1] not in keys


def test_an_input_the_kept_spec_cannot_read_goes_to_the_converter() -> None:
    # A newer durapipe's field (refused by version on the converter's path), a broken value.
    run = _runs()[0]
    data, _ = _spec_key(_raw(run))
    assert _with_kept_spec({**data, "a_field_from_the_future": 1}, run.spec) is None
    assert _with_kept_spec({**data, "inputs": "not a mapping"}, run.spec) is None
    assert _spec_key(_raw(["not", "a", "run"])) == ({}, None)


class _ThrowawayPipe(PipeBase):
    kind: Literal["kept_spec_throwaway"] = "kept_spec_throwaway"


def test_a_kind_registered_later_keys_its_specs_apart() -> None:
    # A worker that kept a spec naming a kind it lacked (read as UnknownPipe) must read it again
    # once the kind is registered, and again once it is forgotten.
    data = pipe_run(dp.pipeline(ASK), "ask", {"question": "q"}).model_dump(mode="json")
    data["spec"]["pipes"]["odd"] = {"kind": "kept_spec_throwaway"}
    raw = _raw(data)
    before = _spec_key(raw)[1]
    unknown = durapipe_converter().payload_converter.from_payload(raw.payload, PipeRun)
    assert isinstance(unknown.spec.pipes["odd"], UnknownPipe)
    generation = kinds_generation()
    register_kind(Kind("kept_spec_throwaway", _ThrowawayPipe))
    try:
        during = _spec_key(raw)[1]
        known = durapipe_converter().payload_converter.from_payload(raw.payload, PipeRun)
        assert isinstance(known.spec.pipes["odd"], _ThrowawayPipe)
    finally:
        unregister_kind("kept_spec_throwaway")
    after = _spec_key(raw)[1]
    assert len({before, during, after}) == 3
    assert kinds_generation() == generation + 2


async def test_runs_of_one_spec_on_a_worker_share_it_and_its_pipes_parts(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: dict[Any, Any] = {}
    monkeypatch.setattr(_workflow, "_KEPT_SPECS", kept)
    pipeline = dp.pipeline(MANY)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        results = [
            await dp.run(
                client,
                pipeline,
                "many",
                {"questions": [f"{n}a", f"{n}b"]},
                run_id=f"kept-{n}-{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
            )
            for n in range(2)
        ]
    assert [len(r.output) for r in results] == [2, 2]
    assert results[0].output != results[1].output  # each run its own inputs
    ((spec, parts),) = kept.values()  # one spec, decoded once for both runs
    assert set(spec.pipes) == {"many", "ask"}
    assert set(parts.call_parts) == {"ask"}  # the item's call parts, made by the first run
    assert set(parts.options._by_pipe) == {"ask"}


async def test_a_top_level_run_is_its_workflow_id_on_either_path(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A schedule starts its runs with a stored input under workflow ids it suffixes: the first
    # run decodes the spec (the converter's path), the second takes the kept one; each step's
    # call names the run by its workflow id on both.
    monkeypatch.setattr(_workflow, "_KEPT_SPECS", {})
    pipeline = dp.pipeline(ASK)
    stored = pipe_run(pipeline, "ask", {"question": "q"}, run_id="stored", searchable_totals=False)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    ids = [f"stored-{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
    async with dp.build_worker(client, task_queue=task_queue):
        for workflow_id in ids:
            await client.execute_workflow(
                WORKFLOW_NAME, stored, id=workflow_id, task_queue=task_queue
            )
    codec = client.data_converter.payload_codec
    for workflow_id in ids:
        [scheduled] = [
            e.activity_task_scheduled_event_attributes
            for e in await history_events(client, workflow_id)
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        payloads = list(scheduled.input.payloads)
        if codec is not None:  # DURAPIPE_ENCRYPTION_KEYS set where the tests run
            payloads = await codec.decode(payloads)
        [call] = durapipe_converter().payload_converter.from_payloads(payloads, [LlmCall])
        assert call.run_id == workflow_id


def test_kept_specs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: dict[Any, Any] = {(0, b"%d" % n): None for n in range(_workflow.SPECS_KEPT)}
    monkeypatch.setattr(_workflow, "_KEPT_SPECS", kept)
    run = _runs()[0]
    raw = _raw(run)
    _, key = _spec_key(raw)
    _workflow._keep(key, run.spec)
    assert list(kept) == [key]


def test_a_spec_too_long_to_keep_is_decoded_per_run() -> None:
    # What a client sends cannot make the cache hold more than SPECS_KEPT * SPEC_BYTES_KEPT.
    long = dp.llm("ask", inputs={"question": str}, prompt="x" * _workflow.SPEC_BYTES_KEPT)
    run = pipe_run(dp.pipeline(long), "ask", {"question": "q"})
    data, key = _spec_key(_raw(run))
    assert key is None and data["run_id"] == run.run_id
    assert _spec_key(_raw(_runs()[0]))[1] is not None
