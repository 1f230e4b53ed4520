"""The Temporal activities: thin wrappers that heartbeat around the shared operator bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, FailureError

from durapipe.activities._agent import run_agent_turn
from durapipe.activities._cost import estimate_cost
from durapipe.activities._extract import run_extract
from durapipe.activities._image import run_image
from durapipe.activities._llm import run_llm
from durapipe.activities._metrics import record_usage
from durapipe.activities._tool import run_tool
from durapipe.adapters._plan import ACTIVITY_NAMES, ATTEMPT_DETAIL, ESTIMATE_ACTIVITY
from durapipe.runtime._calls import (
    AgentTurnCall,
    ExtractCall,
    ImageCall,
    LeafResult,
    LlmCall,
    ToolCall,
)
from durapipe.security._secrets import redact
from durapipe.spec._deck import ModelDeck
from durapipe.stores._checkpoints import CheckpointStore, configured_store

LLM_ACTIVITY = ACTIVITY_NAMES["llm"]
TOOL_ACTIVITY = ACTIVITY_NAMES["tool"]
EXTRACT_ACTIVITY = ACTIVITY_NAMES["extract"]
IMAGE_ACTIVITY = ACTIVITY_NAMES["image"]
AGENT_TURN_ACTIVITY = ACTIVITY_NAMES["agent"]

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
        deck: ModelDeck | None = None,
    ) -> None:
        self.tools = dict(tools or {})
        # Connection settings per model: only this worker's configuration decides where calls go.
        self.deck = deck or ModelDeck()
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
        return [self.llm, self.tool, self.extract, self.image, self.agent_turn, self.estimate_cost]

    @activity.defn(name=LLM_ACTIVITY)
    async def llm(self, call: LlmCall) -> LeafResult:
        """Call a language model (``durapipe.llm``)."""
        result = await _heartbeating(
            run_llm(call, activity.info().attempt, self.checkpoints, self.deck)
        )
        record_usage(result, "llm")
        return result

    @activity.defn(name=TOOL_ACTIVITY)
    async def tool(self, call: ToolCall) -> LeafResult:
        """Call a registered tool function (``durapipe.tool``)."""
        result = await _heartbeating(
            run_tool(call, self.tools, activity.info().attempt, self.checkpoints)
        )
        record_usage(result, "tool")
        return result

    @activity.defn(name=EXTRACT_ACTIVITY)
    async def extract(self, call: ExtractCall) -> LeafResult:
        """Read the pages of a document or image (``durapipe.extract``)."""
        return await _heartbeating(
            run_extract(call, activity.info().attempt, self.checkpoints, self.deck)
        )

    @activity.defn(name=IMAGE_ACTIVITY)
    async def image(self, call: ImageCall) -> LeafResult:
        """Generate an image (``durapipe.image``)."""
        return await _heartbeating(
            run_image(call, activity.info().attempt, self.checkpoints, self.deck)
        )

    @activity.defn(name=AGENT_TURN_ACTIVITY)
    async def agent_turn(self, call: AgentTurnCall) -> LeafResult:
        """Ask an agent's model for its next move (``durapipe.agent_turn``)."""
        return await _heartbeating(
            run_agent_turn(call, activity.info().attempt, self.checkpoints, self.deck)
        )

    @activity.defn(name=ESTIMATE_ACTIVITY)
    async def estimate_cost(self, call: LlmCall) -> float:
        """The worst-case cost of an llm call, checked against a run's budget."""
        return estimate_cost(call)


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating, so a lost worker or a cancel is noticed promptly.

    Heartbeats and failures carry the attempt number (see `ATTEMPT_DETAIL`).
    """
    info = activity.info()
    stamp = {ATTEMPT_DETAIL: info.attempt}
    timeout = info.heartbeat_timeout
    if not timeout:
        return await _stamped(work, stamp)
    interval = max(timeout / 3, timedelta(milliseconds=200)).total_seconds()
    loop = asyncio.get_running_loop()
    # A timer, not a task: a task per step (created, cancelled, awaited) cost more CPU than the
    # heartbeats. The first beat waits one interval, so a call that ends sooner sends none.
    timers: list[asyncio.TimerHandle] = []

    def beat() -> None:
        # Runs in this activity's context: call_later copies the caller's context variables.
        activity.heartbeat(stamp)
        timers[0] = loop.call_later(interval, beat)

    timers.append(loop.call_later(interval, beat))
    try:
        return await _stamped(work, stamp)
    finally:
        timers[0].cancel()


async def _stamped(work: Awaitable[T], stamp: dict[str, int]) -> T:
    """Await ``work``; a failure is re-raised as the same application error plus ``stamp``."""
    try:
        return await work
    except ApplicationError as err:
        raise ApplicationError(
            err.message,
            *err.details,
            stamp,
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
            category=err.category,
        ) from err
    except FailureError:
        raise  # Temporal's own (cancellation and the like): keep them as they are
    except Exception as err:
        # What the SDK would report for a plain exception: its class name as the type. A message
        # quoting a credential of this worker loses its cause too: the cause would quote it again.
        message = redact(str(err))
        failure = ApplicationError(message, stamp, type=type(err).__name__)
        raise failure from (err if message == str(err) else None)
