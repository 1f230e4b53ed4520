"""Workflow version 4: the changes made since version 1 are in force in a new run without a patch
marker (each marker cost a run two history events: the marker and Temporal's
``TemporalChangeVersion`` upsert), while a run of version 3 still asks `workflow.patched`, records
its markers, and replays; one patch stays asked, because its marker is data."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

import durapipe as dp
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.workflows import _patches
from tests.fixtures import agent_tools
from tests.support import history_events, patch_markers, started_as_version

TOOL_TURNS = 3


def recorded_work(events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The events a run's code records: not workflow tasks nor the run's totals, whose counts
    depend on how the server batched completions and how long the run took (a loaded machine
    adds tasks and a timed totals update)."""
    task = {
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    }
    return [
        e
        for e in events
        if e.event_type not in task
        and not (
            e.HasField("upsert_workflow_search_attributes_event_attributes")
            and not upserts_of_change_versions([e])
        )
    ]


def upserts_of_change_versions(events: list[HistoryEvent]) -> int:
    """Temporal's ``TemporalChangeVersion`` upserts (one per patch marker a run records)."""
    return sum(
        e.HasField("upsert_workflow_search_attributes_event_attributes")
        and "TemporalChangeVersion"
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in events
    )


async def test_a_new_agent_run_records_no_patch_marker_and_a_version_3_run_still_does(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent under the worker's step cap asks two patches (the cap, and the turns counted
    # against it): a run of version 3 records both, one of version 4 neither, and its history is
    # shorter by their four events. Both replay, both answer the same, both count their steps.
    monkeypatch.setenv("DURAPIPE_MAX_RUN_STEPS", "100")
    agent = dp.agent(
        "finder",
        prompt="Look up {{ key }}.",
        inputs={"key": str},
        tools=[agent_tools.lookup],
        settings={"offline_tool_rounds": TOOL_TURNS},
    )
    pipeline = dp.pipeline(agent)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    runs: dict[int, tuple[dp.RunResult, list[HistoryEvent]]] = {}
    run_ids = []
    async with dp.build_worker(client, task_queue=task_queue):
        for version in (3, WORKFLOW_VERSION):
            with monkeypatch.context() as started:
                started_as_version(started, version)
                run_id = f"finder-v{version}-{uuid.uuid4().hex[:6]}"
                result = await dp.run(
                    client, pipeline, "finder", {"key": "known"}, run_id=run_id,
                    task_queue=task_queue,
                )  # fmt: skip
            runs[version] = (result, await history_events(client, run_id))
            run_ids.append(run_id)
    (old, old_events), (new, new_events) = runs[3], runs[WORKFLOW_VERSION]
    assert patch_markers(old_events) == ["durapipe.max-run-steps", "durapipe.agent-turn-steps"]
    assert upserts_of_change_versions(old_events) == 2
    assert patch_markers(new_events) == []
    assert upserts_of_change_versions(new_events) == 0
    # Since version 5 an agent of a few turns does not ask the worker's cap either (see
    # test_step_cap_when_needed): one local activity's marker fewer.
    assert len(recorded_work(old_events)) - len(recorded_work(new_events)) == 4 + (
        WORKFLOW_VERSION >= 5
    )
    assert new.output == old.output
    assert [(s.path, s.status) for s in new.steps] == [(s.path, s.status) for s in old.steps]
    assert len(new.steps) == 2 * TOOL_TURNS + 1  # every turn and tool call, counted
    for run_id in run_ids:  # each replays against this code as it ran
        [report] = await dp.ops.replay(await dp.ops.fetch_histories(client, run_id=run_id))
        assert (report.compatible, report.problem) == (True, None), run_id


def test_the_spend_cap_patch_is_never_in_force() -> None:
    # Its marker says whether the worker that started the run had DURAPIPE_MAX_RUN_USD set: a
    # replay on a worker set otherwise reads it there, so no version may assume it.
    assert all("durapipe.max-run-usd" not in changes for changes in _patches.IN_FORCE.values())
    assert _patches.IN_FORCE[WORKFLOW_VERSION] >= _patches.IN_FORCE[3]
