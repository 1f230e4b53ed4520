"""The second baseline: the hand-written workflows of `bench.handwritten` plus what durapipe does
for its user beyond the call, written by hand as a careful Temporal user would.

`bench.handwritten` stays the headline baseline (the issue's bar is against it): the call and
nothing else. This one adds durapipe's user-visible features, so the bench can show how much of
durapipe's gap to the minimal baseline is their price and how much durapipe's own translation:

- **summary**: each activity carries a static one-line summary for the Temporal UI, of the same
  order of length as durapipe's (``llm s12 · durapipe/offline``; here ``ask 12 · durapipe/offline``);
- **heartbeat_timeout**: each activity has the heartbeat timeout durapipe's plan gives an llm step
  (a quarter of the timeout, within 5-20 s: 20 s of 120), and heartbeats every third of it while
  the call runs (from a timer, as durapipe's activity does; a call that ends sooner sends none);
  the start-to-close timeout, the retry policy and the cancellation type are the plan's too;
- **totals_upsert**: the client starts a run with its pipe as a keyword search attribute, and the
  workflow upserts the run's totals (cost, input and output tokens, finished steps, summed from the
  activities' results) as the same typed search attributes at the moments durapipe does: when a
  step finishes at least 2 s after the last upsert (or the start), and at the end if a step
  finished since (so a finished run always carries its totals).

The activity returns the call's cost too (litellm's price of the response), which the totals sum.
Same data converter, unsandboxed workflows, a worker of its own process:

``python -m bench.handwritten_features --address HOST:PORT --task-queue Q``
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.worker import Worker
from temporalio.workflow import ActivityCancellationType

from bench._serve import main as serve_main
from bench.handwritten import MODEL, TIMEOUT, Ask, connect, question

with workflow.unsafe.imports_passed_through():
    from durapipe.adapters._litellm import litellm_module

FEATURES = ("summary", "heartbeat_timeout", "totals_upsert")
# What durapipe's plan gives an llm step (`durapipe.adapters._plan.activity_options`; the bench's
# test reads both from real histories and compares them).
HEARTBEAT_TIMEOUT = timedelta(seconds=20)
OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": TIMEOUT,
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=5,
    ),
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}
# The same attributes durapipe's runs carry, so `durapipe runs` and the UI would list these too.
PIPE = SearchAttributeKey.for_keyword("DurapipePipe")
COST_USD = SearchAttributeKey.for_float("DurapipeCostUsd")
INPUT_TOKENS = SearchAttributeKey.for_int("DurapipeInputTokens")
OUTPUT_TOKENS = SearchAttributeKey.for_int("DurapipeOutputTokens")
STEPS = SearchAttributeKey.for_int("DurapipeSteps")
TOTALS_EVERY = timedelta(seconds=2)


class Spent(BaseModel):
    """What a call returns: the text, its usage and its cost."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@activity.defn(name="bench.features.ask")
async def ask(call: Ask) -> Spent:
    """One model call, heartbeating every third of its heartbeat timeout while it runs."""
    beats = Beats(HEARTBEAT_TIMEOUT.total_seconds() / 3)
    try:
        response = await litellm_module().acompletion(
            model=MODEL, messages=call.messages, num_retries=0, timeout=call.timeout_s
        )
    finally:
        beats.timer.cancel()
    usage = response.usage
    return Spent(
        text=str(response.choices[0].message.content),
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cost_usd=float((getattr(response, "_hidden_params", None) or {}).get("response_cost") or 0),
    )


class Beats:
    """Heartbeats every ``interval`` seconds while an activity runs; the first after one interval.

    A timer rather than a task: cheaper per call, and a call that ends sooner sends none.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(interval, self.beat)

    def beat(self) -> None:
        activity.heartbeat()
        self.timer = self.loop.call_later(self.interval, self.beat)


class Totals:
    """A run's totals, upserted as search attributes when a step finishes `TOTALS_EVERY` after the
    last upsert, and at the end if a step finished since."""

    def __init__(self) -> None:
        self.cost_usd = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.steps = 0
        self.upserted: datetime = workflow.now()
        self.stale = True  # a finished run always carries its totals

    def add(self, spent: Spent) -> None:
        self.cost_usd += spent.cost_usd
        self.input_tokens += spent.input_tokens
        self.output_tokens += spent.output_tokens
        self.steps += 1
        now = workflow.now()
        if now - self.upserted >= TOTALS_EVERY:
            self.upsert(now)
        else:
            self.stale = True

    def end(self) -> None:
        if self.stale:
            self.upsert(workflow.now())

    def upsert(self, now: datetime) -> None:
        workflow.upsert_search_attributes(
            [
                COST_USD.value_set(self.cost_usd),
                INPUT_TOKENS.value_set(self.input_tokens),
                OUTPUT_TOKENS.value_set(self.output_tokens),
                STEPS.value_set(self.steps),
            ]
        )
        self.upserted, self.stale = now, False


async def ask_step(totals: Totals, text: str, label: str) -> str:
    """One step: the call, labelled for the UI, its spend added to the run's totals."""
    spent: Spent = await workflow.execute_activity(
        ask, question(text), summary=f"ask {label} · {MODEL}", **OPTIONS
    )
    totals.add(spent)
    return spent.text


@workflow.defn(name="bench.features.sequence", sandboxed=False)
class SequenceWorkflow:
    """``steps`` calls, one after another."""

    @workflow.run
    async def run(self, text: str, steps: int) -> list[str]:
        """The answers, in order."""
        totals = Totals()
        answers = [await ask_step(totals, f"{text} {i}", str(i)) for i in range(steps)]
        totals.end()
        return answers


@workflow.defn(name="bench.features.single", sandboxed=False)
class SingleWorkflow:
    """One call."""

    @workflow.run
    async def run(self, text: str) -> str:
        """The answer."""
        totals = Totals()
        answer = await ask_step(totals, text, text)
        totals.end()
        return answer


@workflow.defn(name="bench.features.batch", sandboxed=False)
class BatchWorkflow:
    """One call per question, at most ``concurrency`` at once, answers in input order."""

    @workflow.run
    async def run(self, texts: list[str], concurrency: int) -> list[str]:
        """The answers, in input order."""
        totals = Totals()
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, text: str) -> str:
            async with gate:
                return await ask_step(totals, text, f"[{index}]")

        answers = list(await asyncio.gather(*(one(i, t) for i, t in enumerate(texts))))
        totals.end()
        return answers


WORKFLOWS = [SequenceWorkflow, SingleWorkflow, BatchWorkflow]
# Workflow name -> the pipe name its runs are listed under (durapipe's bench pipes).
PIPES = {"bench.features.sequence": "seq50", "bench.features.single": "ask",
         "bench.features.batch": "batch1000"}  # fmt: skip


async def start(
    client: Client,
    workflow_name: str,
    *args: object,
    id: str,
    task_queue: str,
    task_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start a run listed under its pipe (a keyword search attribute, as durapipe's client sets);
    ``task_timeout``: its workflow task timeout (None: Temporal's default)."""
    return await client.start_workflow(
        workflow_name,
        args=list(args),
        id=id,
        task_queue=task_queue,
        task_timeout=task_timeout,
        search_attributes=TypedSearchAttributes([SearchAttributePair(PIPE, PIPES[workflow_name])]),
    )


def build(client: Client, task_queue: str) -> Worker:
    """The hand-written worker with the features."""
    litellm_module()
    return Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[ask])


async def _worker(args: argparse.Namespace) -> Worker:
    return build(await connect(args.address), args.task_queue)


if __name__ == "__main__":
    serve_main("python -m bench.handwritten_features", _worker)
