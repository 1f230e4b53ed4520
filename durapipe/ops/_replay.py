"""Replaying recorded run histories against the current workflow code.

A history replays clean when today's interpreter makes the same decisions (the same activities and
child workflows, in the same order) as the code that recorded it. Anything else is reported per
run as the non-determinism Temporal found, so an incompatible change fails before it is deployed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from durapipe._errors import ConfigError, RunNotFound
from durapipe.adapters import WORKFLOW_NAME
from durapipe.security import EncryptionError
from durapipe.worker import durapipe_converter, sandbox_runner
from durapipe.workflows import PipeWorkflow


class ReplayReport(BaseModel):
    """The outcome of replaying one history: compatible, or the problem found."""

    workflow_id: str
    run_id: str
    compatible: bool
    problem: str | None = None


def current_workflows() -> list[type]:
    """The workflow classes a history is replayed against: the code as it is now."""
    return [PipeWorkflow]


def load_history(path: Path) -> WorkflowHistory:
    """A history saved as JSON (``temporal workflow show --output json`` or `WorkflowHistory.to_json`).

    Raises:
        ConfigError: the file cannot be read or is not a history.
    """
    try:
        return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"cannot read history '{path}': no such file") from None
    except OSError as err:  # its reason, not Python's "[Errno 13] ...: 'path'" again
        raise ConfigError(f"cannot read history '{path}': {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(f"cannot read history '{path}': {err}") from None


async def fetch_histories(
    client: Client, *, run_id: str | None = None, query: str | None = None
) -> list[WorkflowHistory]:
    """Histories of one run (with its child workflows) or of every workflow a visibility query finds.

    Raises:
        RunNotFound: no run with id ``run_id``.
    """
    if run_id is not None:
        query = f"WorkflowType = '{WORKFLOW_NAME}' AND RootWorkflowId = '{run_id}'"
        try:
            await client.get_workflow_handle(run_id).describe()
        except RPCError as err:
            raise RunNotFound(f"no run '{run_id}': {err.message}", run_id=run_id) from None
    try:
        return [h async for h in client.list_workflows(query).map_histories()]
    except RPCError as err:
        raise ConfigError(f"cannot list workflows for '{query}': {err.message}") from None


async def replay(
    histories: Sequence[WorkflowHistory], *, workflows: Sequence[type] | None = None
) -> list[ReplayReport]:
    """Replay every history against ``workflows`` (the current code by default), one report each.

    Payloads are decoded as workers decode them: with the encryption keys of
    ``DURAPIPE_ENCRYPTION_KEYS`` (or ``..._FILE``) and the payload store of the environment.

    Raises:
        ConfigError: the encryption keys are malformed.
        EncryptionError: a history is encrypted with a key this process does not have.
    """
    converter = durapipe_converter()
    for history in histories:
        await _check_decodes(history, converter)
    replayer = Replayer(
        workflows=list(workflows or current_workflows()),
        # The workers' converter: an encrypted or claim-checked history decodes as they wrote it.
        data_converter=converter,
        workflow_runner=sandbox_runner(),
    )

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    reports: list[ReplayReport] = []
    async with replayer.workflow_replay_iterator(each()) as results:
        async for result in results:
            history, failure = result.history, result.replay_failure
            reports.append(
                ReplayReport(
                    workflow_id=history.workflow_id,
                    run_id=_run_id(history),
                    compatible=failure is None,
                    problem=None if failure is None else f"{type(failure).__name__}: {failure}",
                )
            )
    return reports


async def _check_decodes(history: WorkflowHistory, converter: DataConverter) -> None:
    """Refuse a history this process cannot decrypt: without the workers' keys a replay cannot
    tell compatible from not, and calling it INCOMPATIBLE would block a deploy on a false alarm.

    Raises:
        EncryptionError: the key a payload names is missing here, or wrong.
    """
    if not history.events or converter.payload_codec is None:
        return
    started = history.events[0].workflow_execution_started_event_attributes
    try:
        await converter.payload_codec.decode(started.input.payloads)
    except EncryptionError as err:
        raise EncryptionError(f"cannot replay run '{history.workflow_id}': {err}") from None


def _run_id(history: WorkflowHistory) -> str:
    if not history.events:
        return ""
    return history.events[0].workflow_execution_started_event_attributes.original_execution_run_id
