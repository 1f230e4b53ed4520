"""What an agent's loop carries: model replies, the resumable state, and the tools' schemas.

The transcript is kept as compact OpenAI-style chat messages (role, content, tool calls, tool call
id) and nothing else, because it travels in every model request's activity input and in the
continue-as-new payload.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from durapipe._errors import ErrorType
from durapipe.runtime._calls import StepRecord, Usage
from durapipe.spec import ToolPipe, _types
from durapipe.spec._types import Structures

TOOL_ERROR = ErrorType.TOOL_ERROR
"""The error type of a tool that raised `durapipe.ToolError`: an agent hands it to its model."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolRequest(_Message):
    """One tool call the model asked for; ``arguments`` is the model's raw JSON text."""

    id: str
    name: str
    arguments: str = "{}"


class AgentReply(_Message):
    """What one model request of an agent answered.

    Attributes:
        content: the assistant text, if any.
        tool_calls: the tool calls asked for; empty for a final answer.
        output: the final answer, validated against the agent's output type.
        problem: why a final answer did not fit the output type (it is fed back to the model).
    """

    content: str | None = None
    tool_calls: list[ToolRequest] = Field(default_factory=list)
    output: Any = None
    problem: str | None = None

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the transcript."""
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


class AgentState(_Message):
    """Where an agent is: carried into a fresh run when its history grows long (continue-as-new).

    Attributes:
        turn: model requests made so far.
        messages: the transcript.
        bad_turns: consecutive turns with unknown tools or invalid arguments.
        reasks: final answers rejected so far for not fitting the output type.
        steps: the step records so far (model requests and tool calls).
        usage: tokens and cost so far.
        runs: how many runs (histories) the agent has used, this one included.
    """

    turn: int = 0
    messages: list[dict[str, Any]]
    bad_turns: int = 0
    reasks: int = 0
    steps: list[StepRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    runs: int = 1


def tool_schema(name: str, pipe: ToolPipe, structures: Structures) -> dict[str, Any]:
    """The OpenAI-style function schema of a tool pipe, from its declared inputs and description."""
    properties: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for input_name, type_ref in pipe.inputs.items():
        schema = _types.json_schema(type_ref, structures)
        definitions.update(schema.pop("$defs", {}))
        properties[input_name] = schema
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        # An optional input (`optional[T]`) the model may leave out: the tool then reads null.
        "required": [k for k, ref in pipe.inputs.items() if _types.optional_of(ref) is None],
        "additionalProperties": False,
    }
    if definitions:
        parameters["$defs"] = definitions
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if pipe.description:
        function["description"] = pipe.description
    return {"type": "function", "function": function}


def tool_arguments(pipe: ToolPipe, structures: Structures, raw: str) -> dict[str, Any]:
    """The arguments of a tool call, checked against the tool's declared inputs.

    Raises:
        ValueError: the arguments are not a JSON object or do not fit the inputs (says why, for
            the model to read).
    """
    try:
        data = json.loads(raw or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"the arguments are not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("the arguments must be a JSON object")
    problems = [f"unknown argument '{k}'" for k in sorted(set(data) - set(pipe.inputs))]
    checked: dict[str, Any] = {}
    for key, type_ref in pipe.inputs.items():
        if data.get(key) is None and _types.optional_of(type_ref) is not None:
            checked[key] = None  # left out (or null): the tool reads null, as a pipe does
        elif key not in data:
            problems.append(f"missing argument '{key}'")
        else:
            try:
                checked[key] = _types.validate(type_ref, structures, data[key])
            except pydantic.ValidationError as err:
                first = err.errors(include_url=False)[0]
                problems.append(f"argument '{key}' must be {type_ref}: {first['msg']}")
    if problems:
        raise ValueError("; ".join(problems))
    return checked


def tool_result(value: Any) -> str:
    """A tool's output as the text of a tool message."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
