"""pydantic-ai's contestant in ``make bench-peer``: the same calls through its Temporal integration.

An agent on the OpenAI chat model, pointed by the worker's environment at the fake provider
(``OPENAI_BASE_URL``), made durable as pydantic-ai's documentation shows: the ``TemporalDurability``
capability, workflows listing the agent in ``__pydantic_ai_agents__``, ``PydanticAIPlugin`` on the
client (its data converter and its workflow runner, Temporal's sandbox, as a user gets them). Each
``agent.run`` is one model request, so one activity, like one durapipe llm step.

The worker is Temporal's default (deadlock detector on), as pydantic-ai's documentation sets it
up. The detector fails a workflow task that runs over 2 s of wall time without yielding, and the
fan-out starts 200 agent runs in one activation: each ``agent.run`` costs about 3 ms of CPU in
workflow code before it schedules its activity (pydantic-graph, anyio task groups, capabilities;
the sandbox's imports were about 2% of a py-spy profile), 0.57-0.79 s for the 200 on this 2-core
machine at load ~3. With both cores busy (load 6-7) the same activation took over 2 s, and
Temporal retried the failed task forever. ``PEER_DEBUG_MODE=1`` (``python -m bench.peer
--peer-debug-mode``) runs the worker with ``debug_mode=True`` (no detector) for such a machine;
the bench says which mode its figures used. No documented knob keeps the detector and gives such
an activation more time: temporalio (1.35) fixes the limit at 2 s (a configurable timeout is an
open feature request, temporalio/sdk-python#1050), and its only switches, ``debug_mode=True`` and
the ``TEMPORAL_DEBUG`` variable, turn detection off altogether; pydantic-ai's Temporal guide adds
none.

``python -m bench.peer_pydantic_ai --address HOST:PORT --task-queue Q`` runs its worker.
Needs pydantic-ai (``make bench-peer`` installs it into ``bench/.venv-peer``).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import (
    PydanticAIPlugin,
    PydanticAIWorkflow,
    TemporalDurability,
)
from pydantic_ai.models.openai import OpenAIChatModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench._serve import main as serve_main

MODEL = "gpt-peer"

agent = Agent(
    OpenAIChatModel(MODEL),  # base URL and key from OPENAI_BASE_URL / OPENAI_API_KEY
    name="peer",
    capabilities=[TemporalDurability()],
)


@workflow.defn(name="peer.sequence")
class SequenceWorkflow(PydanticAIWorkflow):
    """``steps`` model calls, one after another."""

    __pydantic_ai_agents__ = (agent,)

    @workflow.run
    async def run(self, text: str, steps: int) -> list[str]:
        """The answers, in order."""
        return [(await agent.run(f"{text} {i}")).output for i in range(steps)]


@workflow.defn(name="peer.fanout")
class FanoutWorkflow(PydanticAIWorkflow):
    """One model call per question, all at once."""

    __pydantic_ai_agents__ = (agent,)

    @workflow.run
    async def run(self, texts: list[str]) -> list[str]:
        """The answers, in input order."""
        results = await asyncio.gather(*(agent.run(text) for text in texts))
        return [result.output for result in results]


async def connect(address: str) -> Client:
    """A client with pydantic-ai's plugin, as its documentation sets one up."""
    return await Client.connect(address, plugins=[PydanticAIPlugin()])


async def _worker(args: argparse.Namespace) -> Worker:
    return Worker(
        await connect(args.address),
        task_queue=args.task_queue,
        workflows=[SequenceWorkflow, FanoutWorkflow],
        debug_mode=os.environ.get("PEER_DEBUG_MODE") == "1",  # see the module docstring
    )


if __name__ == "__main__":
    serve_main("python -m bench.peer_pydantic_ai", _worker)
