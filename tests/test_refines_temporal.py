"""A Python pydantic subclass that refines its base, run on the real dev server: the refinement
travels in the workflow input (the history describes itself), the refining value flows into the
step that reads the base, and the run replays and matches `--local`."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

import durapipe as dp
from durapipe.runtime import PipeRun
from tests.support import history_events, replays_clean


class Answer(BaseModel):
    """A yes or no."""

    yes: bool
    why: str = ""


class Firm(Answer):
    """A yes or no that must say why: it declares no field of its own, so it refines Answer."""

    why: str


def _pipeline() -> dp.Pipeline:
    judge = dp.llm("judge", prompt="Is it true? {{ claim }}", inputs={"claim": str}, output=Firm)
    read = dp.llm(
        "read",
        prompt="Said {{ 'yes' if a.yes else 'no' }} because {{ a.why }}",
        inputs={"a": Answer},
    )
    flow = dp.sequence(
        "flow",
        steps=[dp.step(judge, result="a"), dp.step(read, result="said")],
        inputs={"claim": str},
    )
    return dp.pipeline(flow)


async def test_a_refining_subclass_flows_where_its_base_is_read_on_temporal(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = _pipeline()
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"refines-{uuid.uuid4().hex[:8]}"
    inputs = {"claim": "water is wet"}
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, "flow", inputs, run_id=run_id, task_queue=task_queue
        )
    local = await dp.run_local(pipeline, "flow", inputs)
    assert result.output == local.output
    assert result.output.startswith("Offline answer: Said ") and " because " in result.output
    assert [(s.path, s.status) for s in result.steps] == [
        ("judge", "succeeded"),
        ("read", "succeeded"),
    ]
    events = await history_events(client, run_id)
    [started] = await client.data_converter.decode(
        events[0].workflow_execution_started_event_attributes.input.payloads, [PipeRun]
    )
    # The run's own spec says Firm refines Answer, and carries Answer: a worker (or a replay, or
    # `durapipe show`) reads the history without the Python classes that declared them.
    structures = started.spec.structures
    assert structures["Firm"].refines == "Answer"
    assert set(structures["Firm"].fields) == set(structures["Answer"].fields) == {"yes", "why"}
    # Narrowed: Answer's `why` may be left out (default ""), Firm's is required.
    assert (
        structures["Answer"].fields["why"].default,
        structures["Firm"].fields["why"].default,
    ) == (
        "",
        None,
    )
    assert structures["Answer"].refines is None
    await replays_clean(client, run_id)
