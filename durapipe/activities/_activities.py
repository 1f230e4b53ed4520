"""The Temporal activities: thin wrappers that heartbeat around the shared operator bodies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import activity

from durapipe.activities._checkpoints import CheckpointStore, configured_store
from durapipe.activities._llm import run_llm
from durapipe.activities._tool import run_tool
from durapipe.adapters._calls import LeafResult, LlmCall, ToolCall
from durapipe.adapters._plan import ACTIVITY_NAMES

LLM_ACTIVITY = ACTIVITY_NAMES["llm"]
TOOL_ACTIVITY = ACTIVITY_NAMES["tool"]

T = TypeVar("T")


class Activities:
    """The durapipe activities, bound to the tool functions this worker can run.

    Example:
        >>> activities = Activities({"brief_tools:count_words": count_words})  # doctest: +SKIP
        >>> Worker(client, task_queue="durapipe", activities=activities.all())  # doctest: +SKIP
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        checkpoints: CheckpointStore | Literal["env"] | None = "env",
    ) -> None:
        self.tools = dict(tools or {})
        # "env": the store DURAPIPE_CHECKPOINTS names, opened when the first call needs it.
        self._checkpoints = checkpoints

    @property
    def checkpoints(self) -> CheckpointStore | None:
        """The checkpoint store of this worker's calls (None: checkpoints are off)."""
        if self._checkpoints == "env":
            self._checkpoints = configured_store()
        return self._checkpoints

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for a worker's ``activities=``."""
        return [self.llm, self.tool]

    @activity.defn(name=LLM_ACTIVITY)
    async def llm(self, call: LlmCall) -> LeafResult:
        """Call a language model (``durapipe.llm``)."""
        return await _heartbeating(run_llm(call, activity.info().attempt, self.checkpoints))

    @activity.defn(name=TOOL_ACTIVITY)
    async def tool(self, call: ToolCall) -> LeafResult:
        """Call a registered tool function (``durapipe.tool``)."""
        return await _heartbeating(
            run_tool(call, self.tools, activity.info().attempt, self.checkpoints)
        )


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating, so a lost worker or a cancel is noticed promptly."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await work
    interval = max(timeout / 3, timedelta(milliseconds=200)).total_seconds()

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    beater = asyncio.create_task(beat())
    try:
        return await work
    finally:
        beater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beater
