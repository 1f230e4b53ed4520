"""The workflows of one run and the length of each history: to check a run stays within bounds."""

from __future__ import annotations

from temporalio.client import Client


async def run_histories(client: Client, run_id: str) -> dict[str, int]:
    """Every workflow of run ``run_id`` (the top one and all its descendants) -> its event count.

    Follows the child workflows each history started, so it needs no search attributes and sees
    every workflow of the run as soon as the run has finished.
    """
    counts: dict[str, int] = {}
    pending = [run_id]
    while pending:
        workflow_id = pending.pop()
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        counts[workflow_id] = len(history.events)
        pending.extend(
            event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            for event in history.events
            if event.HasField("start_child_workflow_execution_initiated_event_attributes")
        )
    return counts
