"""A budget estimates an agent's turns and image steps before they run, as it does llm steps: a
call whose worst case does not fit is not made, on Temporal and with ``--local``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import durapipe as dp
from durapipe.activities import estimate_cost
from durapipe.adapters._litellm import litellm_module
from durapipe.runtime import AgentTurnCall, ImageCall
from durapipe.testing import FakeProvider, ToolCalls
from tests.fixtures.agent_tools import note
from tests.support import priced_openai

# $0.01 an output token: a turn of at most 100 output tokens could cost just over $1.
PRICES = {"gpt-agent": (1e-5, 0.01)}
IMAGE_MODEL = "openai/gpt-img-test"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai(PRICES) as fake:
        litellm_module().register_model(
            {IMAGE_MODEL: {"output_cost_per_image": 0.5, "litellm_provider": "openai",
                           "mode": "image_generation"}}
        )  # fmt: skip
        fake.set_default(ToolCalls([{"name": "note", "arguments": {"text": "x"}}]))
        yield fake


def pipeline() -> dp.Pipeline:
    helper = dp.agent(
        "helper",
        model="openai/gpt-agent",
        inputs={"topic": str},
        prompt="Take notes on {{ topic }}.",
        tools=[note],
        max_turns=2,
        settings={"max_tokens": 100},
    )
    cover = dp.image(
        "cover", model=IMAGE_MODEL, inputs={"topic": str}, prompt="{{ topic }}", retry={"max_attempts": 1}
    )  # fmt: skip
    return dp.pipeline(helper, cover)


def test_the_worst_case_of_a_turn_and_an_image(fake: FakeProvider) -> None:
    flow = pipeline()
    turn = AgentTurnCall(
        run_id="r", path="turn-1", pipe_name="helper", pipe=flow.pipes["helper"], turn=1,
        messages=[{"role": "user", "content": "Take notes on x."}],
    )  # fmt: skip
    # 100 output tokens at $0.01, and the input (the message) at $0.00001 a token.
    assert 1.0 < estimate_cost(turn) < 1.001
    image = ImageCall(
        run_id="r", path="cover", pipe_name="cover", pipe=flow.pipes["cover"], inputs={"topic": "x"}
    )  # fmt: skip
    assert estimate_cost(image) == 0.5


@pytest.mark.parametrize(("pipe", "model"), [("helper", "gpt-agent"), ("cover", IMAGE_MODEL)])
async def test_a_turn_or_an_image_that_could_exceed_the_budget_is_not_made(
    temporal_address: str, task_queue: str, fake: FakeProvider, pipe: str, model: str
) -> None:
    flow = pipeline()
    client = await dp.connect(temporal_address, pipeline=flow)
    failures: list[dp.StepFailed] = []
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed) as on_temporal:
            await dp.run(client, flow, pipe, {"topic": "x"}, task_queue=task_queue, budget_usd=0.4)
    failures.append(on_temporal.value)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(flow, pipe, {"topic": "x"}, budget_usd=0.4)
    failures.append(local.value)
    for failure in failures:
        assert failure.cause_type == "durapipe.BudgetExceeded", failure
        assert "no further paid call was made" in failure.cause
    assert [c for c in fake.calls if c.model in (model, model.removeprefix("openai/"))] == []
