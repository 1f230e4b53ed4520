"""Static checks of the built-in leaf kinds (llm, tool, extract, image, approval) and the agent.

Each check is registered with its kind (`durapipe.spec._builtin_kinds`) and called by
`durapipe.spec.check` with each pipe of that kind, exactly as a registered kind's own checks are.
"""

from __future__ import annotations

from collections.abc import Mapping

from durapipe.spec import _templates, _types
from durapipe.spec._deck import settings_problems
from durapipe.spec._flow import Report
from durapipe.spec._names import suggest
from durapipe.spec._spec import (
    AgentPipe,
    ApprovalPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    Pipeline,
    ToolPipe,
)


def check_model(pipeline: Pipeline, model: str, where: str, report: Report) -> None:
    if model not in pipeline.models and "/" not in model:
        known = ", ".join(sorted(pipeline.models)) or "none declared"
        report(
            where,
            f"model '{model}' is neither a declared alias ({known}) nor a provider/model string "
            "such as openai/gpt-4o-mini",
        )


def check_operator(
    pipeline: Pipeline, name: str, pipe: ExtractPipe | ImagePipe, report: Report
) -> None:
    """Extract and image pipes: model, fallbacks, settings, the image prompt's variables, the one
    document."""
    where = f"pipe '{name}'"
    if pipe.model is not None:
        check_model(pipeline, pipe.model, f"{where}, field 'model'", report)
    _check_fallbacks(pipeline, where, pipe.fallbacks, report)
    _check_settings(where, pipe.kind, pipe.settings, report)
    if isinstance(pipe, ImagePipe):
        _check_templates(where, pipe.inputs, [("prompt", pipe.prompt)], report)
        return
    blobs = [n for n, t in pipe.inputs.items() if _types.is_assignable(t, "file")]
    if len(pipe.inputs) != 1 or len(blobs) != 1:
        declared = ", ".join(f"{n}: {t}" for n, t in pipe.inputs.items()) or "none"
        report(
            f"{where}, field 'inputs'",
            f"an extract pipe reads exactly one input of type document, image or file (declared: {declared})",
        )


def _check_model_and_output(
    pipeline: Pipeline, where: str, pipe: LlmPipe | AgentPipe, report: Report
) -> None:
    if pipe.model is not None:
        check_model(pipeline, pipe.model, f"{where}, field 'model'", report)
    for message in _types.type_problems(pipe.output, pipeline.structures):
        report(f"{where}, field 'output'", message)


def _check_fallbacks(pipeline: Pipeline, where: str, fallbacks: list[str], report: Report) -> None:
    # Models like `model`: a fallback without its provider would escape `provider:` limits.
    for model in fallbacks:
        check_model(pipeline, model, f"{where}, field 'fallbacks'", report)


def check_llm(pipeline: Pipeline, name: str, pipe: LlmPipe, report: Report) -> None:
    """Model, fallbacks, output type, settings, and the system and prompt templates over inputs."""
    where = f"pipe '{name}'"
    _check_model_and_output(pipeline, where, pipe, report)
    _check_fallbacks(pipeline, where, pipe.fallbacks, report)
    _check_settings(where, "llm", pipe.settings, report)
    _check_templates(where, pipe.inputs, [("system", pipe.system), ("prompt", pipe.prompt)], report)


def check_agent(pipeline: Pipeline, name: str, pipe: AgentPipe, report: Report) -> None:
    """Model, output, settings, templates, and tools that name tool pipes once each."""
    where = f"pipe '{name}'"
    _check_model_and_output(pipeline, where, pipe, report)
    _check_settings(where, "agent", pipe.settings, report)
    templates = [("instructions", pipe.instructions), ("prompt", pipe.prompt)]
    _check_templates(where, pipe.inputs, templates, report)
    for tool_name in pipe.tools:
        target = pipeline.pipes.get(tool_name)
        if target is None:
            report(
                f"{where}, field 'tools'",
                f"unknown pipe '{tool_name}'{suggest(tool_name, pipeline.pipes)}",
            )
        elif not isinstance(target, ToolPipe):
            report(
                f"{where}, field 'tools'",
                f"pipe '{tool_name}' is a {target.kind} pipe; an agent can only call tool pipes",
            )
    if len(set(pipe.tools)) < len(pipe.tools):
        report(f"{where}, field 'tools'", "a tool is listed twice")


def _check_templates(
    where: str,
    inputs: Mapping[str, str],
    templates: list[tuple[str, str | None]],
    report: Report,
) -> None:
    """Every template variable must be a declared input, and every declared input used."""
    used: set[str] = set()
    parsed = True
    for field, template in templates:
        if template is None:
            continue
        try:
            names = _templates.variables(template)
        except _templates.TemplateError as err:
            report(f"{where}, field '{field}'", str(err))
            parsed = False
            continue
        used |= names
        for construct in _templates.unsafe_constructs(template):
            report(f"{where}, field '{field}'", construct)
        for variable in sorted(names - set(inputs)):
            report(
                f"{where}, field '{field}'",
                f"template variable '{variable}' is not a declared input "
                f"(declared: {', '.join(inputs) or 'none'})",
            )
    # A template that does not parse says nothing about which inputs it uses.
    fields = " or ".join(field for field, _ in templates)
    for unused in sorted(set(inputs) - used) if parsed else []:
        report(
            f"{where}, input '{unused}'", f"declared input is never used by the {fields} template"
        )


def check_approval(pipeline: Pipeline, name: str, pipe: ApprovalPipe, report: Report) -> None:
    """The value is a declared input (or the only one) and the message reads declared inputs."""
    where = f"pipe '{name}'"
    if pipe.value is not None and pipe.value not in pipe.inputs:
        report(
            f"{where}, field 'value'",
            f"'{pipe.value}' is not a declared input (declared: {', '.join(pipe.inputs) or 'none'})",
        )
    elif pipe.value_name is None:
        report(
            f"{where}, field 'value'",
            "name the input the run continues with when approved (the pipe has "
            f"{len(pipe.inputs)} inputs)",
        )
    try:
        names = _templates.variables(pipe.message)
    except _templates.TemplateError as err:
        report(f"{where}, field 'message'", str(err))
        return
    for variable in sorted(names - set(pipe.inputs)):
        report(
            f"{where}, field 'message'",
            f"template variable '{variable}' is not a declared input "
            f"(declared: {', '.join(pipe.inputs) or 'none'})",
        )


def _check_settings(where: str, kind: str, settings: Mapping[str, object], report: Report) -> None:
    for name, message in settings_problems(kind, settings):
        report(f"{where}, field 'settings.{name}'", message)


def check_tool(pipeline: Pipeline, name: str, pipe: ToolPipe, report: Report) -> None:
    """The output is a known type (the function itself is the worker's, checked when it runs)."""
    for message in _types.type_problems(pipe.output, pipeline.structures):
        report(f"pipe '{name}', field 'output'", message)
