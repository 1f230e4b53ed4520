"""The baseline: the same work as the bench pipelines, written by hand with temporalio.

One activity makes the same litellm call a durapipe llm step makes (no retries in litellm) and
returns the text with its token counts; the workflows call it in a sequence, once, or over a list
with bounded concurrency. This is what a careful Temporal user would write without durapipe, set up
as durapipe is, so the two do the same work: the workflows run outside Temporal's sandbox
(``sandboxed=False``, as durapipe's workflow does), the client and worker use temporalio's pydantic
data converter (durapipe's), and each activity takes and returns a small pydantic model (model,
messages and timeout; text and usage), payloads of the same order as durapipe's (the bench prints both).

``python -m bench.handwritten --address HOST:PORT --task-queue Q [--worker-heartbeat SECONDS|off]``
runs a worker in its own process (the bench measures its CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Worker

from bench._serve import main as serve_main

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

with workflow.unsafe.imports_passed_through():
    from durapipe.adapters._litellm import litellm_module

# The worker owns the model (as a durapipe worker owns its providers): the offline model by default,
# the fake provider's model in the peer race (``bench/peer.py`` sets the variable).
MODEL = os.environ.get("BENCH_MODEL", "durapipe/offline")
TIMEOUT = timedelta(seconds=120)
OPTIONS = {"start_to_close_timeout": TIMEOUT, "retry_policy": RetryPolicy(maximum_attempts=5)}


class Ask(BaseModel):
    """One model call: what a hand-written llm activity takes."""

    messages: list[dict[str, str]]
    timeout_s: float = TIMEOUT.total_seconds()


class Answer(BaseModel):
    """What it returns: the text and the usage."""

    text: str
    input_tokens: int
    output_tokens: int


@activity.defn(name="bench.ask")
async def ask(call: Ask) -> Answer:
    """One model call."""
    response = await litellm_module().acompletion(
        model=MODEL, messages=call.messages, num_retries=0, timeout=call.timeout_s
    )
    usage = response.usage
    return Answer(
        text=str(response.choices[0].message.content),
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
    )


def question(text: str) -> Ask:
    """The call for one question."""
    return Ask(messages=[{"role": "user", "content": text}])


@workflow.defn(name="bench.sequence", sandboxed=False)
class SequenceWorkflow:
    """``steps`` calls, one after another."""

    @workflow.run
    async def run(self, text: str, steps: int) -> list[str]:
        """The answers, in order."""
        answers = []
        for i in range(steps):
            answer = await workflow.execute_activity(ask, question(f"{text} {i}"), **OPTIONS)  # type: ignore[arg-type]
            answers.append(answer.text)
        return answers


@workflow.defn(name="bench.single", sandboxed=False)
class SingleWorkflow:
    """One call."""

    @workflow.run
    async def run(self, text: str) -> str:
        """The answer."""
        answer = await workflow.execute_activity(ask, question(text), **OPTIONS)  # type: ignore[arg-type]
        return answer.text


@workflow.defn(name="bench.batch", sandboxed=False)
class BatchWorkflow:
    """One call per question, at most ``concurrency`` at once, answers in input order."""

    @workflow.run
    async def run(self, texts: list[str], concurrency: int) -> list[str]:
        """The answers, in input order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(text: str) -> str:
            async with gate:
                answer = await workflow.execute_activity(ask, question(text), **OPTIONS)  # type: ignore[arg-type]
                return answer.text

        return list(await asyncio.gather(*(one(t) for t in texts)))


WORKFLOWS = [SequenceWorkflow, SingleWorkflow, BatchWorkflow]


async def connect(address: str, runtime: Runtime | None = None) -> Client:
    """A client with the data converter durapipe uses (on ``runtime``, else temporalio's default)."""
    return await Client.connect(address, data_converter=pydantic_data_converter, runtime=runtime)


def heartbeat_runtime(interval: str) -> Runtime:
    """A runtime whose workers send Temporal a worker heartbeat every ``interval`` seconds, or
    none (``off``): the idle bench (`bench.idle_cpu`) prices a beat with it. temporalio's default
    runtime beats every 60 s."""
    every = None if interval == "off" else timedelta(seconds=float(interval))
    return Runtime(telemetry=TelemetryConfig(), worker_heartbeat_interval=every)


def build(client: Client, task_queue: str, max_concurrent: int | None = None) -> Worker:
    """The hand-written worker."""
    litellm_module()
    extra = {"max_concurrent_activities": max_concurrent} if max_concurrent else {}
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[ask],
        **extra,  # type: ignore[arg-type]
    )


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-concurrent", type=int)
    parser.add_argument(
        "--worker-heartbeat", metavar="SECONDS|off", help="[default: temporalio's, 60 s]"
    )


async def _worker(args: argparse.Namespace) -> Worker:
    runtime = heartbeat_runtime(args.worker_heartbeat) if args.worker_heartbeat else None
    return build(await connect(args.address, runtime), args.task_queue, args.max_concurrent)


if __name__ == "__main__":
    serve_main("python -m bench.handwritten", _worker, _options)
