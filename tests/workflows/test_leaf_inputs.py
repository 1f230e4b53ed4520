"""What a run's history holds for each llm step: the bytes of that step's own call, dumped afresh.

The workflow lends each pipe's wire form to the serializer instead of dumping the pipe for every
step; the history must not show it (same bytes as a dump per step, each step its own pipe).
"""

from __future__ import annotations

import uuid

from temporalio.contrib.pydantic import pydantic_data_converter

import durapipe as dp
from durapipe.runtime import LlmCall
from tests.support import history_events


async def test_each_llm_step_carries_its_own_pipe_in_the_bytes_of_a_fresh_dump(
    temporal_address: str, task_queue: str
) -> None:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", timeout=30)
    shout = dp.llm(
        "shout",
        inputs={"ask": str},
        prompt="Shout {{ ask }}",
        system="Be loud.",
        settings={"temperature": 0.5},
    )
    flow = dp.sequence(
        "flow",
        inputs={"question": str},
        steps=[
            dp.step(ask, name="first"),
            dp.step(ask, name="second", result="ask"),
            dp.step(shout),
            dp.step(ask, name="third"),
        ],
    )
    pipeline = dp.pipeline(flow)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"leaf-inputs-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(
            client, pipeline, "flow", {"question": "q"}, run_id=run_id, task_queue=task_queue
        )
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in await history_events(client, run_id)
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    codec = client.data_converter.payload_codec
    sent = []
    for attributes in scheduled:
        payloads = list(attributes.input.payloads)
        if codec is not None:  # DURAPIPE_ENCRYPTION_KEYS set where the tests run
            payloads = await codec.decode(payloads)
        [call] = pydantic_data_converter.payload_converter.from_payloads(payloads, [LlmCall])
        [fresh] = pydantic_data_converter.payload_converter.to_payloads([call])
        sent.append((attributes.activity_id, call.pipe_name, call.pipe.prompt, call.pipe.system))
        assert payloads[0].data == fresh.data, attributes.activity_id
    assert sent == [
        ("first", "ask", "{{ question }}", None),
        ("second", "ask", "{{ question }}", None),
        ("shout", "shout", "Shout {{ ask }}", "Be loud."),
        ("third", "ask", "{{ question }}", None),
    ]
