"""The pipe model: specs, the Python and YAML spellings, resolution and static validation.

This layer knows nothing of Temporal.
"""

from durapipe.pipes._builders import (
    Binding,
    Pipe,
    StepRef,
    bind,
    llm,
    pipeline,
    sequence,
    step,
    tool,
)
from durapipe.pipes._control_builders import BranchRef, batch, branch, condition, parallel
from durapipe.pipes._load import import_function, load, tool_functions
from durapipe.pipes._resolve import reachable, resolve, subset
from durapipe.pipes._spec import (
    CONTROLLER_KINDS,
    OFFLINE_MODEL,
    BatchPipe,
    Branch,
    ConditionPipe,
    LlmPipe,
    ParallelPipe,
    Pipeline,
    PipeSpec,
    RetrySpec,
    SequencePipe,
    Step,
    ToolPipe,
    is_controller,
    parse_duration,
    pipes_used,
)
from durapipe.pipes._templates import TemplateError, evaluate, render, variables
from durapipe.pipes._types import FieldSpec, StructureSpec
from durapipe.pipes._validate import check, check_inputs, output_type, validate
from durapipe.pipes._yaml import load_yaml

__all__ = [
    "CONTROLLER_KINDS",
    "OFFLINE_MODEL",
    "BatchPipe",
    "Binding",
    "Branch",
    "BranchRef",
    "ConditionPipe",
    "FieldSpec",
    "LlmPipe",
    "ParallelPipe",
    "Pipe",
    "PipeSpec",
    "Pipeline",
    "RetrySpec",
    "SequencePipe",
    "Step",
    "StepRef",
    "StructureSpec",
    "TemplateError",
    "ToolPipe",
    "batch",
    "bind",
    "branch",
    "check",
    "check_inputs",
    "condition",
    "evaluate",
    "import_function",
    "is_controller",
    "llm",
    "load",
    "load_yaml",
    "output_type",
    "parallel",
    "parse_duration",
    "pipeline",
    "pipes_used",
    "reachable",
    "render",
    "resolve",
    "sequence",
    "step",
    "subset",
    "tool",
    "tool_functions",
    "validate",
    "variables",
]
