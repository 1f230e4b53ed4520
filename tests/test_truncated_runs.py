"""Runs whose model stops at its output limit, on Temporal and with ``--local``: a cut-off answer
that cannot be used fails its step at once (``durapipe.OutputTruncated``, one paid request, its
spend in the run's totals); a cut-off text answer is the step's output, marked on its record."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio.client import Client
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.testing import FakeProvider, Reply
from durapipe.workflows._search import COST_USD, INPUT_TOKENS, OUTPUT_TOKENS
from tests.support import WorkerProcess, paid_pipeline, priced_openai, run_cli

# $0.01 an output token: each cut-off answer of 100 tokens costs $1 and a little input.
PRICES = {"gpt-think": (1e-5, 0.01)}
FAST_RETRY = {"max_attempts": 3, "initial_interval": 0.05, "backoff": 1.0}
THOUGHT_ONLY = Reply(
    content="", finish_reason="length", completion_tokens=100, reasoning_tokens=100
)
CUT_JSON = Reply(content='{"names": ["alpha", "be', finish_reason="length", completion_tokens=100)
CUT_TEXT = Reply(content="Alpha, Beta, Gam", finish_reason="length", completion_tokens=100)


class Names(BaseModel):
    """A structured answer."""

    names: list[str]


def pipeline() -> dp.Pipeline:
    def llm(name: str, output: type = str) -> dp.Pipe:
        return dp.llm(
            name,
            model="openai/gpt-think",
            inputs={"topic": str},
            prompt="Name things about {{ topic }}.",
            output=output,
            settings={"max_tokens": 100},
            retry=FAST_RETRY,
            reask=2,
        )

    planner = dp.agent(
        "planner",
        model="openai/gpt-think",
        inputs={"topic": str},
        prompt="Plan {{ topic }}.",
        settings={"max_tokens": 100},
        retry=FAST_RETRY,
    )
    return dp.pipeline(llm("think"), llm("names", Names), llm("prose"), planner)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai(PRICES) as fake:
        yield fake


# pipe, its answer, the failed step's path, the start of the cause
FAILURES = [
    ("think", THOUGHT_ONLY, "think", "pipe 'think': openai/gpt-think stopped at its output limit"),
    ("names", CUT_JSON, "names", "pipe 'names': openai/gpt-think stopped at its output limit"),
    ("planner", THOUGHT_ONLY, "turn-1", "agent 'planner', turn 1: openai/gpt-think"),
]


def billed(fake: FakeProvider, since: int) -> tuple[int, int, int, float]:
    """The paid calls since ``since``, their input and output tokens, and their cost."""
    cost_in, cost_out = PRICES["gpt-think"]
    paid = [c for c in fake.calls[since:] if c.paid]
    tokens_in = sum(c.prompt_tokens for c in paid)
    tokens_out = sum(c.completion_tokens for c in paid)
    return len(paid), tokens_in, tokens_out, tokens_in * cost_in + tokens_out * cost_out


def recorded(steps: list[dp.StepRecord]) -> tuple[int, int, float]:
    from durapipe.workflows._search import spent

    total = spent(steps)
    return total.input_tokens, total.output_tokens, total.cost_usd


async def totals_of(client: Client, run_id: str) -> tuple[int, int, float]:
    attributes = (await client.get_workflow_handle(run_id).describe()).typed_search_attributes
    return (
        attributes.get(INPUT_TOKENS) or 0,
        attributes.get(OUTPUT_TOKENS) or 0,
        attributes.get(COST_USD) or 0.0,
    )


def _same(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    return a[:2] == b[:2] and abs(a[2] - b[2]) < 1e-9


def _check_failure(err: dp.StepFailed, failed: str, said: str) -> None:
    assert err.cause_type == "durapipe.OutputTruncated", err
    assert err.cause.startswith(said), err.cause
    step = next((s for s in err.steps if s.path == failed), None)
    assert step is not None, [s.path for s in err.steps]
    assert step.status == "failed" and step.error_type == "durapipe.OutputTruncated"


async def test_a_cut_off_answer_fails_its_step_once_with_its_spend_counted_on_temporal(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    flow = pipeline()
    client = await dp.connect(temporal_address, pipeline=flow)
    async with dp.build_worker(client, task_queue=task_queue):
        for pipe, answer, failed, said in FAILURES:
            fake.set_default(answer)
            since = len(fake.calls)
            run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
            with pytest.raises(dp.StepFailed) as raised:
                await dp.run(
                    client, flow, pipe, {"topic": "x"}, run_id=run_id, task_queue=task_queue
                )
            _check_failure(raised.value, failed, said)
            # One request, though the policy allows 3 attempts and the pipe 2 re-asks.
            calls, tokens_in, tokens_out, cost = billed(fake, since)
            assert calls == 1 and tokens_out == 100 and cost > 1, pipe
            assert _same(recorded(raised.value.steps), (tokens_in, tokens_out, cost)), pipe
            assert _same(await totals_of(client, run_id), (tokens_in, tokens_out, cost)), pipe
        fake.set_default(CUT_TEXT)
        result = await dp.run(client, flow, "prose", {"topic": "x"}, task_queue=task_queue)
    assert result.output == "Alpha, Beta, Gam"
    assert [(s.path, s.truncated) for s in result.steps] == [("prose", True)]


async def test_a_cut_off_answer_fails_its_step_once_with_its_spend_counted_locally(
    fake: FakeProvider,
) -> None:
    flow = pipeline()
    for pipe, answer, failed, said in FAILURES:
        fake.set_default(answer)
        since = len(fake.calls)
        with pytest.raises(dp.StepFailed) as raised:
            await dp.run_local(flow, pipe, {"topic": "x"})
        _check_failure(raised.value, failed, said)
        calls, tokens_in, tokens_out, cost = billed(fake, since)
        assert calls == 1 and tokens_out == 100 and cost > 1, pipe
        assert _same(recorded(raised.value.steps), (tokens_in, tokens_out, cost)), pipe
    fake.set_default(CUT_TEXT)
    result = await dp.run_local(flow, "prose", {"topic": "x"})
    assert result.output == "Alpha, Beta, Gam"
    assert [(s.path, s.truncated) for s in result.steps] == [("prose", True)]
    assert _same(
        (result.usage.input_tokens, result.usage.output_tokens, result.usage.cost_usd),
        billed(fake, len(fake.calls) - 1)[1:],
    )


def test_the_cli_says_in_one_sentence_that_an_answer_was_cut_off(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    with FakeProvider() as fake:
        # call1's text answer is cut and kept; call2 thinks through its whole limit.
        fake.script("gpt-think", [CUT_TEXT, THOUGHT_ONLY] * 2)
        file = paid_pipeline(tmp_path, fake.base_url, "gpt-think", 2)
        worker = WorkerProcess(file, temporal_address, task_queue, tmp_path / "w.log")
        run_id = f"cut-{uuid.uuid4().hex[:8]}"
        try:
            on_temporal = run_cli(
                "run", "paid", "--file", str(file), "--input", "topic=x", "--id", run_id,
                "--address", temporal_address, "--task-queue", task_queue,
            )  # fmt: skip
        finally:
            worker.stop()
        shown = run_cli("show", run_id, "--address", temporal_address)
        invoked = CliRunner().invoke(
            app, ["run", "paid", "--file", str(file), "--input", "topic=x", "--local"]
        )
        local = subprocess.CompletedProcess([], invoked.exit_code, invoked.stdout, invoked.stderr)
    assert len(fake.calls) == 4
    for result in (on_temporal, local):
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert (
            "step 'call2' (llm on model openai/gpt-think) failed: durapipe.OutputTruncated: pipe "
            "'call': openai/gpt-think stopped at its output limit of 100 tokens "
            "(settings.max_tokens) with no answer, after 100 output tokens, 100 of them "
            "reasoning; raise settings.max_tokens, or lower settings.reasoning_effort"
        ) in result.stderr, result.stderr
    # The step whose text answer was cut and kept says so, as it finishes and in `show`.
    assert "✓ call1 (llm · openai/gpt-think)" in on_temporal.stderr
    assert "100 out tokens  answer cut off at its output limit" in on_temporal.stderr
    call1 = next(line for line in shown.stdout.splitlines() if " call1 (" in line)
    assert "answer cut off at its output limit" in call1, shown.stdout


@pytest.mark.parametrize("item", ["prose", "per_item"], ids=["leaf", "sequence"])
@pytest.mark.parametrize(
    ("items", "chunk_size"), [(60, 100), (7, 3)], ids=["one-row-for-many-items", "chunks"]
)
async def test_a_batchs_one_row_says_an_items_text_answer_was_cut(
    temporal_address: str,
    task_queue: str,
    fake: FakeProvider,
    items: int,
    chunk_size: int,
    item: str,
) -> None:
    # A batch of more than 50 items, or one run in chunks, keeps one record for all its items (its
    # `[*]` row, counts per status): an item's cut text answer has no record of its own to say so,
    # nor do the records of an item that is a run of its own (a sequence per item).
    fake.set_default(CUT_TEXT)
    spec = dp.load_yaml(f"""
pipes:
  each:
    kind: batch
    inputs: {{numbers: 'list[integer]'}}
    over: numbers
    item: n
    pipe: {item}
    chunk_size: {chunk_size}
  per_item:
    kind: sequence
    inputs: {{n: integer}}
    steps:
      - {{pipe: prose, result: said}}
  prose:
    kind: llm
    model: openai/gpt-think
    inputs: {{n: integer}}
    prompt: "Say {{{{ n }}}}."
    settings: {{max_tokens: 100}}
""")  # fmt: skip
    inputs = {"numbers": list(range(items))}
    client = await dp.connect(temporal_address, pipeline=spec)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, spec, "each", inputs, task_queue=task_queue)
    local = await dp.run_local(spec, "each", inputs)
    for run in (result, local):
        assert run.output == [CUT_TEXT.content] * items
        [row] = run.steps
        assert (row.path, row.counts, row.truncated) == ("each[*]", {"succeeded": items}, True)


async def test_a_batchs_one_row_says_it_for_an_item_that_failed_after_its_answer_was_cut(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # Each item's run keeps its cut text, then fails: its records come back with its failure.
    fake.set_default(CUT_TEXT)
    spec = dp.load_yaml("""
pipes:
  each:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: per_item
    on_error: collect
  per_item:
    kind: sequence
    inputs: {n: integer}
    steps:
      - {pipe: prose, result: said}
      - {pipe: refuse, inputs: {n: n, bad: n}, result: refused}
  prose:
    kind: llm
    model: openai/gpt-think
    inputs: {n: integer}
    prompt: "Say {{ n }}."
    settings: {max_tokens: 100}
  refuse:
    kind: tool
    function: tests.control_tools:fail_on
    inputs: {n: integer, bad: integer}
    output: integer
    retry: {max_attempts: 1}
""")  # fmt: skip
    inputs = {"numbers": list(range(60))}
    client = await dp.connect(temporal_address, pipeline=spec)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, spec, "each", inputs, task_queue=task_queue)
    local = await dp.run_local(spec, "each", inputs)
    for run in (result, local):
        [row] = run.steps
        assert (row.counts, row.truncated) == ({"failed": 60}, True)


@pytest.mark.parametrize("on", ["temporal", "local"])
async def test_a_memoised_pipes_cut_answer_is_not_served_to_other_runs(
    temporal_address: str, task_queue: str, fake: FakeProvider, on: str
) -> None:
    # Memoised answers are keyed by what a call sends, not by the worker's output cap: a cut one
    # served from the memo would reach runs whose limit was raised, as if whole.
    spec = dp.load_yaml("""
pipes:
  prose:
    kind: llm
    model: openai/gpt-think
    memoize: true
    inputs: {topic: text}
    prompt: "Write about {{ topic }}."
""")  # fmt: skip
    inputs = {"topic": f"memo-{on}-{uuid.uuid4().hex}"}
    whole = "Alpha, Beta, Gamma."
    fake.script("gpt-think", [CUT_TEXT, Reply(content=whole)])
    client = await dp.connect(temporal_address, pipeline=spec)
    async with dp.build_worker(client, task_queue=task_queue):

        async def run() -> dp.RunResult:
            if on == "local":
                return await dp.run_local(spec, "prose", inputs)
            return await dp.run(client, spec, "prose", inputs, task_queue=task_queue)

        cut, again, memoised = await run(), await run(), await run()
    assert (cut.output, cut.steps[0].truncated) == (CUT_TEXT.content, True)
    # The next run asked the model again, and its whole answer is the one shared.
    assert (again.output, again.steps[0].truncated, again.steps[0].cache_hit) == (
        whole, False, False,
    )  # fmt: skip
    assert (memoised.output, memoised.steps[0].cache_hit) == (whole, True)
    assert len(fake.calls) == 2
