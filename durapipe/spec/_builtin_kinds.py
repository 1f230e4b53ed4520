"""The built-in pipe kinds, each declared once: a `Kind` per kind, as any other kind is declared.

Each entry holds everything pure about its kind: the spec class (also its YAML and Python model),
its default timeout and retry, its checks, and for a leaf the activity it runs as (recorded in
histories: never renamed) and the message that activity takes. The leaves' activity bodies are
registered by the same names in `durapipe.activities` (one module per kind).

Per-kind defaults: an llm call is slow and flaky (providers rate-limit), a tool is local code, OCR
of a long scan takes minutes, and image models are slow and rate-limited. An agent runs its
tool-calling loop in a workflow of its own, so it is a controller; its timeout and retry apply to
each of its model requests (``durapipe.agent_turn``), so they default like llm's. Compose is an
inline kind: computed in the workflow itself, no activity. The controllers, the agent loop and
approval (which waits for a decision through the runtime) are walked by the interpreter
(`durapipe.runtime`), which is why they declare no call.
"""

from __future__ import annotations

from typing import Any

from durapipe._errors import ErrorType
from durapipe.spec._base import RetrySpec
from durapipe.spec._check_controllers import (
    check_batch,
    check_condition,
    check_parallel,
    check_sequence,
)
from durapipe.spec._check_leaves import (
    check_agent,
    check_approval,
    check_llm,
    check_operator,
    check_tool,
)
from durapipe.spec._compose import check_compose, compose
from durapipe.spec._flow import Report
from durapipe.spec._kinds import InlineError, Kind, register_kind
from durapipe.spec._messages import AgentTurnCall, ExtractCall, ImageCall, LlmCall, ToolCall
from durapipe.spec._spec import (
    AgentPipe,
    ApprovalPipe,
    BatchPipe,
    ComposePipe,
    ConditionPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    ParallelPipe,
    SequencePipe,
    ToolPipe,
)
from durapipe.spec._templates import TemplateError


def _check_compose(pipeline: Any, name: str, pipe: ComposePipe, report: Report) -> None:
    check_compose(name, pipe, pipeline.structures, report)


def _compose(pipe: ComposePipe, inputs: dict[str, Any], structures: dict[str, Any]) -> Any:
    # Deterministic and local: it runs in the workflow, with no activity to schedule.
    try:
        return compose(pipe, inputs, structures)
    except (TemplateError, KeyError, ValueError) as err:
        raise InlineError(ErrorType.COMPOSE_ERROR, str(err)) from None


_LLM_RETRY = RetrySpec(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0)

LLM = Kind(
    "llm",
    LlmPipe,
    timeout=120.0,
    retry=_LLM_RETRY,
    activity="durapipe.llm",
    call=LlmCall,
    check=check_llm,
)
TOOL = Kind(
    "tool",
    ToolPipe,
    timeout=60.0,
    retry=RetrySpec(max_attempts=3, initial_interval=1.0, backoff=2.0, max_interval=30.0),
    activity="durapipe.tool",
    call=ToolCall,
    check=check_tool,
)
EXTRACT = Kind(
    "extract",
    ExtractPipe,
    timeout=300.0,
    retry=RetrySpec(max_attempts=3, initial_interval=2.0, backoff=2.0, max_interval=60.0),
    activity="durapipe.extract",
    call=ExtractCall,
    check=check_operator,
)
IMAGE = Kind(
    "image",
    ImagePipe,
    timeout=180.0,
    retry=RetrySpec(max_attempts=4, initial_interval=2.0, backoff=2.0, max_interval=60.0),
    activity="durapipe.image",
    call=ImageCall,
    check=check_operator,
)
SEQUENCE = Kind("sequence", SequencePipe, controller=True, check=check_sequence)
PARALLEL = Kind("parallel", ParallelPipe, controller=True, check=check_parallel)
BATCH = Kind("batch", BatchPipe, controller=True, check=check_batch)
CONDITION = Kind("condition", ConditionPipe, controller=True, check=check_condition)
# A controller whose one activity is its model turn: the message is the agent loop's, not a leaf's.
AGENT = Kind(
    "agent",
    AgentPipe,
    controller=True,
    timeout=120.0,
    retry=_LLM_RETRY,
    activity="durapipe.agent_turn",
    call=AgentTurnCall,
    check=check_agent,
)
APPROVAL = Kind("approval", ApprovalPipe, check=check_approval)
COMPOSE = Kind("compose", ComposePipe, check=_check_compose, inline=_compose)

for _kind in (
    LLM,
    TOOL,
    EXTRACT,
    IMAGE,
    SEQUENCE,
    PARALLEL,
    BATCH,
    CONDITION,
    AGENT,
    APPROVAL,
    COMPOSE,
):
    register_kind(_kind)
