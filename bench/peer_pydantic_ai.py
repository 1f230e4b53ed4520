"""pydantic-ai's contestant in ``make bench-peer``: the same calls through its Temporal integration.

An agent on the OpenAI chat model, pointed by the worker's environment at the fake provider
(``OPENAI_BASE_URL``), made durable as pydantic-ai's documentation shows: the ``TemporalDurability``
capability, workflows listing the agent in ``__pydantic_ai_agents__``, ``PydanticAIPlugin`` on the
client (its data converter and its workflow runner, Temporal's sandbox, as a user gets them). Each
``agent.run`` is one model request, so one activity, like one durapipe llm step.

One setting differs from the defaults: the worker runs with ``debug_mode=True``, which turns off
Temporal's deadlock detector. The fan-out starts 200 agent runs in one workflow activation, and in
the sandbox that took over the detector's 2 s on this shared machine: the workflow task failed
and was retried forever, and the fan-out never finished. With the detector off it finishes (and
its CPU time still counts in full).

``python -m bench.peer_pydantic_ai --address HOST:PORT --task-queue Q`` runs its worker.
Needs pydantic-ai (``make bench-peer`` installs it into ``bench/.venv-peer``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

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


async def _serve() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_pydantic_ai")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    client = await connect(args.address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(
        client,
        task_queue=args.task_queue,
        workflows=[SequenceWorkflow, FanoutWorkflow],
        debug_mode=True,  # no deadlock detector: see the module docstring
    ):
        print("worker ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
