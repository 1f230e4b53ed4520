"""A run started by a newer durapipe than the worker's waits for an upgraded worker, and says so."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ConfigDict, create_model
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

import durapipe as dp
from durapipe.adapters._plan import WORKFLOW_NAME, pipe_run
from durapipe.runtime._calls import WORKFLOW_VERSION, PipeRun
from durapipe.workflows._search import start_totals
from tests.support import attempt_of, eventually


@pytest.mark.parametrize(
    ("sealed", "new_field"),
    [(False, False), (True, False), (False, True)],
    ids=["plain", "encrypted", "with-a-field-this-worker-lacks"],
)
async def test_a_run_of_a_newer_workflow_version_waits_and_says_why(
    temporal_address: str,
    task_queue: str,
    brief_yaml: dp.Pipeline,
    sealed: bool,
    new_field: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sealed:  # failures travel sealed too: the sentence must still carry the message
        monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{dp.security.new_encryption_key()}")
    client = await dp.connect(temporal_address, pipeline=brief_yaml)
    run_id = f"newer-{uuid.uuid4().hex[:8]}"
    run = pipe_run(brief_yaml, "brief", {"article": "Some text."}, run_id=run_id)
    newer: object = run.model_copy(update={"workflow_version": WORKFLOW_VERSION + 1})
    if new_field:
        # A newer version may grow the input: PipeRun (extra="forbid") would refuse the field
        # before the version is read, and the sentence would be a validation error.
        newer = {**run.model_dump(mode="json"), "workflow_version": WORKFLOW_VERSION + 1}
        newer["a_field_from_the_future"] = {"on": True}
    async with dp.build_worker(client, task_queue=task_queue):
        await client.start_workflow(
            WORKFLOW_NAME,
            newer,
            id=run_id,
            task_queue=task_queue,
            search_attributes=start_totals("brief"),
        )
        handle = dp.RunHandle(client, run_id)

        async def failing() -> str | None:
            # Until the in-process worker has polled, the queue has no worker: not yet.
            why = await handle.stalled()
            return why if why and why.startswith("its workflow task") else None

        why = await eventually(failing, "the run's failing workflow task to be reported")
    attempt = attempt_of(why)
    assert attempt >= 3
    assert why == (
        f"its workflow task is on attempt {attempt} on the workers of task queue '{task_queue}'; "
        "the first attempt failed (Temporal records no later one's outcome): run "
        f"'{run_id}' was started by a newer durapipe (workflow version "
        f"{WORKFLOW_VERSION + 1}; this worker runs versions up to {WORKFLOW_VERSION}): upgrade "
        f"durapipe on the workers of task queue '{task_queue}'"
    )
    description = await client.get_workflow_handle(run_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING  # waiting, nothing lost
    await client.get_workflow_handle(run_id).terminate("test over")


# The previous release's input type: `PipeRun` without the field version 3 added, still refusing
# unknown fields (extra="forbid"), and taken decoded by temporalio as that release's workflow did.
PreviousPipeRun = create_model(
    "PreviousPipeRun",
    __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
    **{
        name: (field.annotation, field)
        for name, field in PipeRun.model_fields.items()
        if name != "searchable_totals"
    },
)


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class PreviousReleaseWorkflow:
    """A worker of the release before version 3, as far as decoding its input goes."""

    @workflow.run
    async def run(self, run: PreviousPipeRun) -> None:  # type: ignore[valid-type]
        raise AssertionError("the previous release decodes no run with searchable totals off")


async def test_a_worker_older_than_a_run_with_totals_off_is_named_to_upgrade(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline
) -> None:
    client = await dp.connect(temporal_address, pipeline=brief_yaml)
    # A client without durapipe's plugin (which registers durapipe's workflows on its workers).
    plain = await Client.connect(temporal_address, data_converter=client.data_converter)
    worker = Worker(plain, task_queue=task_queue, workflows=[PreviousReleaseWorkflow])
    async with worker:
        handle = await dp.start(
            client,
            brief_yaml,
            "brief",
            {"article": "Some text."},
            task_queue=task_queue,
            searchable_totals=False,
        )

        async def failing() -> str | None:
            why = await handle.stalled()
            return why if why and why.startswith("its workflow task") else None

        why = await eventually(failing, "the run's failing workflow task to be reported")
    attempt = attempt_of(why)
    assert attempt >= 3
    assert why == (
        f"its workflow task is on attempt {attempt} on the workers of task queue '{task_queue}'; "
        "the first attempt failed (Temporal records no later one's outcome): they cannot decode "
        "this run's input ('Failed decoding arguments'), likely older than the durapipe that "
        f"started it (workflow version {WORKFLOW_VERSION}): upgrade them"
    )
    await client.get_workflow_handle(handle.run_id).terminate("test over")
