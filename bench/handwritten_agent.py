"""The agent baseline: durapipe's agent loop written by hand with temporalio (`bench.agent`).

What a careful Temporal user writes for a model that calls tools in a loop, set up as durapipe's
agent is, so both do the same work:

- the workflow keeps the conversation and sends all of it with each model request (durapipe's
  agent does the same: its state's messages go into every ``durapipe.agent_turn`` activity's input,
  and the reply comes back in its result); the reply's tool calls each run as an activity of their
  own, concurrently, their results appended as ``tool`` messages in the model's order; the loop
  ends when the model answers without tool calls, or fails after ``max_turns`` requests;
- the model activity makes the same litellm call (the offline model, the same tool schema, the
  same ``offline_tool_rounds``, ``num_retries=0``, the step's timeout, ``_skip_mcp_handler``) and
  returns the reply with its token counts; the tool activity calls the same function
  (`bench.agent_tools.lookup`) with arguments the workflow checked against a pydantic model;
- both activities get the options durapipe's plan gives an agent turn and a tool call
  (`durapipe.adapters._plan.activity_options` for a pipe without ``timeout`` or ``retry``):
  start-to-close 60 s, heartbeat timeout 15 s (with a heartbeat every third of it while the call
  runs, from a timer, as durapipe's activity does), the default retry policy (3 attempts, 1 s,
  x2, at most 60 s), cancellation waiting for the call to stop;
- unsandboxed workflow, temporalio's pydantic data converter (durapipe's), a worker of its own.

``python -m bench.handwritten_agent --address HOST:PORT --task-queue Q`` runs the worker.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker
from temporalio.workflow import ActivityCancellationType

from bench._serve import main as serve_main
from bench.handwritten import connect
from bench.handwritten_features import Beats

with workflow.unsafe.imports_passed_through():
    from bench.agent_tools import lookup
    from durapipe.adapters._litellm import litellm_module

MODEL = "durapipe/offline"
TIMEOUT = timedelta(seconds=60)
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": TIMEOUT,
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=3,
    ),
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}
# The schema durapipe sends for the bench's tool pipe (the bench refuses to run if they differ).
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
                "additionalProperties": False,
            },
            "description": "Look up the record filed under a query.",
        },
    }
]


class Turn(BaseModel):
    """One model request: the conversation so far and the scripted tool rounds."""

    messages: list[dict[str, Any]]
    rounds: int


class Request(BaseModel):
    """One tool call the model asked for."""

    id: str
    name: str
    arguments: str


class Reply(BaseModel):
    """The model's next move, with its usage."""

    content: str | None
    tool_calls: list[Request]
    input_tokens: int
    output_tokens: int

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return message


class Lookup(BaseModel):
    """The tool's arguments."""

    query: str


@activity.defn(name="bench.agent.model")
async def model_turn(turn: Turn) -> Reply:
    """One model request."""
    beats = Beats(HEARTBEAT_TIMEOUT.total_seconds() / 3)
    try:
        response = await litellm_module().acompletion(
            model=MODEL,
            messages=turn.messages,
            tools=TOOLS,
            num_retries=0,
            timeout=TIMEOUT.total_seconds(),
            offline_tool_rounds=turn.rounds,
            # litellm routes calls with tools= through its MCP handler unless told not to.
            _skip_mcp_handler=True,
        )
    finally:
        beats.timer.cancel()
    message = response.choices[0].message
    return Reply(
        content=message.content,
        tool_calls=[
            Request(id=c.id, name=c.function.name or "", arguments=c.function.arguments or "{}")
            for c in message.tool_calls or []
        ],
        input_tokens=response.usage.prompt_tokens,
        output_tokens=response.usage.completion_tokens,
    )


@activity.defn(name="bench.agent.tool")
async def call_tool(arguments: Lookup) -> str:
    """One tool call."""
    beats = Beats(HEARTBEAT_TIMEOUT.total_seconds() / 3)
    try:
        return await lookup(arguments.query)
    finally:
        beats.timer.cancel()


@workflow.defn(name="bench.agent", sandboxed=False)
class AgentWorkflow:
    """Model requests and tool calls until the model answers."""

    @workflow.run
    async def run(self, question: str, rounds: int, max_turns: int) -> str:
        """The model's final answer."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        for _ in range(max_turns):
            reply: Reply = await workflow.execute_activity(
                model_turn, Turn(messages=messages, rounds=rounds), **OPTIONS
            )
            messages.append(reply.message())
            if not reply.tool_calls:
                return reply.content or ""
            for request in reply.tool_calls:
                if request.name != "lookup":
                    raise ApplicationError(f"unknown tool '{request.name}'", non_retryable=True)
            results = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        call_tool, Lookup.model_validate_json(request.arguments), **OPTIONS
                    )
                    for request in reply.tool_calls
                )
            )
            messages.extend(
                {"role": "tool", "tool_call_id": request.id, "content": result}
                for request, result in zip(reply.tool_calls, results, strict=True)
            )
        raise ApplicationError(f"no final answer in {max_turns} turns", non_retryable=True)


def build(client: Any, task_queue: str) -> Worker:
    """The hand-written agent worker."""
    litellm_module()
    return Worker(
        client, task_queue=task_queue, workflows=[AgentWorkflow], activities=[model_turn, call_tool]
    )


async def _worker(args: argparse.Namespace) -> Worker:
    return build(await connect(args.address), args.task_queue)


if __name__ == "__main__":
    serve_main("python -m bench.handwritten_agent", _worker)
