"""The pipe model: specs, resolution and static validation (the spellings that build it live in adapters/).

This layer knows nothing of Temporal.
"""

from durapipe.spec import _builtin_kinds  # noqa: F401  (registers the built-in kinds)
from durapipe.spec._base import PipeBase, RetrySpec, format_duration, parse_duration
from durapipe.spec._blob_refs import not_a_blob
from durapipe.spec._deck import ModelDeck, ModelEntry
from durapipe.spec._kinds import (
    InlineError,
    Kind,
    is_controller_kind,
    kind_of,
    kinds,
    register_kind,
)
from durapipe.spec._resolve import reachable, resolve, subset
from durapipe.spec._routing import limits_for, matches, request_limits, route
from durapipe.spec._spec import (
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
    RouteRule,
    SequencePipe,
    Step,
    ToolPipe,
    is_controller,
    pipes_used,
)
from durapipe.spec._templates import TemplateError, evaluate, render, variables
from durapipe.spec._types import Blob, FieldSpec, Page, StructureSpec
from durapipe.spec._validate import check, check_inputs, output_type, validate

__all__ = [
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
    "InlineError",
    "Kind",
    "LimitRule",
    "LlmPipe",
    "ModelDeck",
    "ModelEntry",
    "Page",
    "ParallelPipe",
    "PipeBase",
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
    "format_duration",
    "is_controller",
    "is_controller_kind",
    "kind_of",
    "kinds",
    "limits_for",
    "matches",
    "not_a_blob",
    "output_type",
    "parse_duration",
    "pipes_used",
    "reachable",
    "register_kind",
    "render",
    "request_limits",
    "resolve",
    "route",
    "subset",
    "validate",
    "variables",
]
