"""Activity inputs as they travel through Temporal."""

from __future__ import annotations

from temporalio.contrib.pydantic import pydantic_data_converter

from durapipe.runtime import LlmCall
from durapipe.spec import LlmPipe


def travelled(call: LlmCall) -> tuple[bytes, LlmCall]:
    """``call`` as a payload, and as the activity reads it back."""
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([call])
    [back] = converter.from_payloads([payload], [LlmCall])
    return payload.data, back


def test_an_llm_step_travels_without_its_pipes_defaults_and_reads_back_the_same() -> None:
    pipe = LlmPipe(model="openai/gpt-4o-mini", prompt="{{ question }}", inputs={"question": "text"})
    call = LlmCall(run_id="r1", scope="s" * 32, path="ask", pipe_name="ask", pipe=pipe)
    data, back = travelled(call)
    assert back == call
    assert b'"reask"' not in data and b'"summary"' not in data  # defaults left out
    assert len(data) < 200


def test_values_a_pipe_sets_travel_even_when_they_look_like_defaults_elsewhere() -> None:
    pipe = LlmPipe(
        model="openai/gpt-4o-mini",
        prompt="Say {{ word }}",
        inputs={"word": "text"},
        reask=0,
        memoize=True,
        timeout="7s",
        settings={"temperature": 0},
    )
    call = LlmCall(
        run_id="r1", path="say", pipe_name="say", pipe=pipe, inputs={"word": ""}, summary="s"
    )
    _, back = travelled(call)
    assert back == call
    assert back.pipe.reask == 0 and back.pipe.memoize and back.inputs == {"word": ""}
