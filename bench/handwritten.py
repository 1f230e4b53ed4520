"""The baseline: the same work as the bench pipelines, written by hand with temporalio.

One activity makes the same litellm call a durapipe llm step makes (offline model, no retries in
litellm); the workflows call it in a sequence, once, or over a list with bounded concurrency. This
is what a Temporal user would write without durapipe: the minimum to compare against.

``python -m bench.handwritten --address HOST:PORT --task-queue Q`` runs a worker (for RSS figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

with workflow.unsafe.imports_passed_through():
    from durapipe.adapters._litellm import litellm_module

MODEL = "durapipe/offline"
OPTIONS = {
    "start_to_close_timeout": timedelta(seconds=120),
    "retry_policy": RetryPolicy(maximum_attempts=5),
}


@activity.defn(name="bench.ask")
async def ask(question: str) -> str:
    """One model call."""
    response = await litellm_module().acompletion(
        model=MODEL, messages=[{"role": "user", "content": question}], num_retries=0
    )
    return str(response.choices[0].message.content)


@workflow.defn(name="bench.sequence")
class SequenceWorkflow:
    """``steps`` calls, one after another."""

    @workflow.run
    async def run(self, question: str, steps: int) -> list[str]:
        """The answers, in order."""
        return [
            await workflow.execute_activity(ask, f"{question} {i}", **OPTIONS)  # type: ignore[arg-type]
            for i in range(steps)
        ]


@workflow.defn(name="bench.single")
class SingleWorkflow:
    """One call."""

    @workflow.run
    async def run(self, question: str) -> str:
        """The answer."""
        return await workflow.execute_activity(ask, question, **OPTIONS)  # type: ignore[arg-type]


@workflow.defn(name="bench.batch")
class BatchWorkflow:
    """One call per question, at most ``concurrency`` at once, answers in input order."""

    @workflow.run
    async def run(self, questions: list[str], concurrency: int) -> list[str]:
        """The answers, in input order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(question: str) -> str:
            async with gate:
                return await workflow.execute_activity(ask, question, **OPTIONS)  # type: ignore[arg-type]

        return list(await asyncio.gather(*(one(q) for q in questions)))


WORKFLOWS = [SequenceWorkflow, SingleWorkflow, BatchWorkflow]


def build(client: Client, task_queue: str, max_concurrent: int | None = None) -> Worker:
    """The hand-written worker."""
    litellm_module()
    extra = {"max_concurrent_activities": max_concurrent} if max_concurrent else {}
    return Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[ask], **extra)


async def _serve() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handwritten")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--max-concurrent", type=int)
    args = parser.parse_args()
    client = await Client.connect(args.address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with build(client, args.task_queue, args.max_concurrent):
        print("worker ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
