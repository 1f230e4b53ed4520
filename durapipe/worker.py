"""The durapipe plugin and worker assembly.

`DurapipePlugin` is the one object a user adds to a Temporal client or worker: it wires the pydantic
data converter, the workflow sandbox passthroughs, the workflow and the activities.

Example:
    >>> client = await Client.connect("localhost:7233", plugins=[DurapipePlugin(pipeline)])  # doctest: +SKIP
    >>> worker = Worker(client, task_queue="durapipe")  # the worker inherits the plugin  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from durapipe._codec import encryption_from_env
from durapipe._errors import ConfigError
from durapipe.activities import Activities
from durapipe.adapters import DEFAULT_TASK_QUEUE
from durapipe.adapters._litellm import litellm_module
from durapipe.pipes import Pipeline, tool_functions
from durapipe.workflows import PipeWorkflow

# Modules the workflow sandbox shares with the worker instead of re-importing per run.
PASSTHROUGH_MODULES = {
    # Specs, the interpreter and translation rules: pure code with no I/O and only caches of pure
    # functions as module state, so sharing them is deterministic and saves a re-import per run.
    "durapipe": "pure specs and interpreter",
    # The spec models are pydantic models; re-importing pydantic per workflow run is slow.
    "pydantic": "spec models",
    "pydantic_core": "spec models",
    "annotated_types": "pydantic dependency",
    # Templates and (later) condition expressions; jinja2 is pure and slow to import.
    "jinja2": "templates",
    "markupsafe": "jinja2 dependency",
}


class DurapipePlugin(SimplePlugin):
    """Wires durapipe into a Temporal client and worker.

    Args:
        pipeline: the pipeline whose tool functions this worker runs (none for a client-only use).
        tools: tool functions by ``module:name`` reference, in addition to the pipeline's.
        codec: the payload codec; by default payload encryption as configured by
            ``DURAPIPE_ENCRYPTION_KEYS`` / ``DURAPIPE_ENCRYPTION_KEYS_FILE`` (see `durapipe._codec`).

    Raises:
        ConfigError: the encryption keys are malformed.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        codec: PayloadCodec | None = None,
    ) -> None:
        functions = {**(tool_functions(pipeline) if pipeline else {}), **(tools or {})}
        activities = Activities(functions)
        # The codec runs on every payload before it leaves the process. Keep it the innermost
        # step: when external storage (claim check) is added, it must store payloads this codec
        # has already encrypted, so the store never holds plain text either.
        converter = dataclasses.replace(
            pydantic_data_converter, payload_codec=codec or encryption_from_env()
        )
        super().__init__(
            "durapipe.DurapipePlugin",
            data_converter=converter,
            activities=activities.all(),
            workflows=[PipeWorkflow],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules(
                    *PASSTHROUGH_MODULES
                )
            ),
        )


def build_worker(
    client: Client,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    max_concurrent_activities: int | None = None,
) -> Worker:
    """A worker for durapipe workflows and activities on ``task_queue``.

    ``client`` must carry a `DurapipePlugin` (see `durapipe.connect`); the worker inherits it, with
    the pipeline's tools, from the client.

    Raises:
        ConfigError: the client has no `DurapipePlugin`.
    """
    if not any(isinstance(p, DurapipePlugin) for p in client.config().get("plugins", [])):
        raise ConfigError(
            "the client has no DurapipePlugin: connect with durapipe.connect(pipeline=...)"
        )
    # Import litellm now: importing it inside the first llm activity would stall the worker's
    # event loop (workflow tasks included) for seconds.
    litellm_module()
    options: dict[str, Any] = {}
    if max_concurrent_activities is not None:
        options["max_concurrent_activities"] = max_concurrent_activities
    return Worker(client, task_queue=task_queue, **options)
