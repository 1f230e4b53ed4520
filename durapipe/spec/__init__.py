"""The pipe model: specs, resolution and static validation (the spellings that build it live in adapters/).

This layer knows nothing of Temporal.
"""

from durapipe.spec._resolve import reachable, resolve, subset
from durapipe.spec._routing import limits_for, matches, route
from durapipe.spec._spec import (
    CONTROLLER_KINDS,
    LOCAL_EXTRACTOR,
    OFFLINE_MODEL,
    AgentPipe,
    ApprovalPipe,
    BatchPipe,
    Branch,
    ConditionPipe,
    ExtractPipe,
    ImagePipe,
    LimitRule,
    LlmPipe,
    ParallelPipe,
    Pipeline,
    PipeSpec,
    RetrySpec,
    RouteRule,
    SequencePipe,
    Step,
    ToolPipe,
    is_controller,
    parse_duration,
    pipes_used,
)
from durapipe.spec._templates import TemplateError, evaluate, render, variables
from durapipe.spec._types import Blob, FieldSpec, Page, StructureSpec
from durapipe.spec._validate import check, check_inputs, output_type, validate

__all__ = [
    "CONTROLLER_KINDS",
    "LOCAL_EXTRACTOR",
    "OFFLINE_MODEL",
    "AgentPipe",
    "ApprovalPipe",
    "BatchPipe",
    "Blob",
    "Branch",
    "ConditionPipe",
    "ExtractPipe",
    "FieldSpec",
    "ImagePipe",
    "LimitRule",
    "LlmPipe",
    "Page",
    "ParallelPipe",
    "PipeSpec",
    "Pipeline",
    "RetrySpec",
    "RouteRule",
    "SequencePipe",
    "Step",
    "StructureSpec",
    "TemplateError",
    "ToolPipe",
    "check",
    "check_inputs",
    "evaluate",
    "is_controller",
    "limits_for",
    "matches",
    "output_type",
    "parse_duration",
    "pipes_used",
    "reachable",
    "render",
    "resolve",
    "route",
    "subset",
    "validate",
    "variables",
]
