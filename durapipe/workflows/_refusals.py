"""Why a worker refuses a run's input: a newer workflow version than it runs, or an input that does
not decode as its `PipeRun`. Either fails the workflow task (not the run), so the run waits for a
worker that can take it (an upgraded one, during a rolling deploy), and clients say why
(`client._stalls.failing_task`)."""

from __future__ import annotations

from pydantic_core import ValidationError
from temporalio import workflow

from durapipe._words import counted
from durapipe.runtime._calls import WORKFLOW_VERSION


class NewerRunError(Exception):
    """A run asks for a workflow version this worker does not have; fails the workflow task (not
    the run), so the run waits for an upgraded worker."""


class RunInputError(Exception):
    """A run's input does not decode as this worker's `PipeRun` (a field out of its bounds, JSON
    nested too deep, a client sending its own input); fails the workflow task (not the run), so an
    upgraded worker may still take the run during a rolling deploy. Its message is one line naming
    the run and the field (the worker logs it as such, `worker._UndecodableTasks`; clients show
    it, `client._stalls.failing_task`), not pydantic's report with its documentation links."""


def input_problem(err: Exception) -> str:
    """What is wrong with a run's input, in one line: the first field pydantic refused and why (and
    how many more), else the error's first line."""
    if isinstance(err, ValidationError):
        problems = err.errors(include_url=False)
        if problems:
            first = problems[0]
            where = ".".join(str(part) for part in first["loc"])
            said = f"field '{where}': {first['msg']}" if where else str(first["msg"])
            more = len(problems) - 1
            return said + (f" (and {counted(more, 'more problem')})" if more else "")
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


def refuse_if_newer(version: int, run_id: str) -> None:
    if version > WORKFLOW_VERSION:
        # Running it the way this code runs older versions would record commands a worker of
        # its own version cannot replay. Failing the workflow task keeps the run waiting for
        # such a worker (clients say why: `client._stalls.failing_task`).
        raise NewerRunError(
            f"run '{run_id}' was started by a newer durapipe (workflow version "
            f"{version}; this worker runs versions up to {WORKFLOW_VERSION}): "
            f"upgrade durapipe on the workers of task queue '{workflow.info().task_queue}'"
        )
