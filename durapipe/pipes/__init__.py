"""The pipe model: specs, the Python and YAML spellings, resolution and static validation.

This layer knows nothing of Temporal.
"""

from durapipe.pipes._builders import (
    Pipe,
    StepRef,
    agent,
    approval,
    extract,
    image,
    llm,
    pipeline,
    sequence,
    step,
    tool,
)
from durapipe.pipes._load import import_function, load, tool_functions
from durapipe.pipes._resolve import reachable, resolve, subset
from durapipe.pipes._routing import route
from durapipe.pipes._spec import (
    CONTROLLER_KINDS,
    LOCAL_EXTRACTOR,
    OFFLINE_MODEL,
    AgentPipe,
    ApprovalPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    Pipeline,
    PipeSpec,
    RetrySpec,
    RouteRule,
    SequencePipe,
    Step,
    ToolPipe,
    is_controller,
    parse_duration,
)
from durapipe.pipes._templates import TemplateError, render, variables
from durapipe.pipes._types import Blob, FieldSpec, Page, StructureSpec
from durapipe.pipes._validate import check, check_inputs, output_type, validate
from durapipe.pipes._yaml import load_yaml

__all__ = [
    "CONTROLLER_KINDS",
    "LOCAL_EXTRACTOR",
    "OFFLINE_MODEL",
    "AgentPipe",
    "ApprovalPipe",
    "Blob",
    "ExtractPipe",
    "FieldSpec",
    "ImagePipe",
    "LlmPipe",
    "Page",
    "Pipe",
    "PipeSpec",
    "Pipeline",
    "RetrySpec",
    "RouteRule",
    "SequencePipe",
    "Step",
    "StepRef",
    "StructureSpec",
    "TemplateError",
    "ToolPipe",
    "agent",
    "approval",
    "check",
    "check_inputs",
    "extract",
    "image",
    "import_function",
    "is_controller",
    "llm",
    "load",
    "load_yaml",
    "output_type",
    "parse_duration",
    "pipeline",
    "reachable",
    "render",
    "resolve",
    "route",
    "sequence",
    "step",
    "subset",
    "tool",
    "tool_functions",
    "validate",
    "variables",
]
