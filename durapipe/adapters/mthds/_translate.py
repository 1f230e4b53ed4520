"""MTHDS blueprints -> durapipe's one spec (`Pipeline`): the third spelling of the same model.

Each operator becomes the durapipe pipe with the same meaning (PipeLLM -> llm, PipeFunc -> tool,
PipeImgGen -> image, PipeExtract -> extract, PipeSearch -> llm with a SearchResult structure,
PipeCompose -> compose, Pipelex's PipeJudge -> llm with a verdict structure), each controller the durapipe controller (sequence, parallel, condition,
batch). Concepts become types: refinements of Text are ``text``, structured concepts structures,
multiplicity ``list[T]`` / ``list[T, N]``.
"""

from __future__ import annotations

import re
from typing import Any

from durapipe._errors import Problem
from durapipe.adapters.mthds import _judge, _shorthand
from durapipe.adapters.mthds._bundle import (
    Bundle,
    FieldBlueprint,
    PipeBatch,
    PipeCompose,
    PipeCondition,
    PipeExtract,
    PipeFunc,
    PipeImgGen,
    PipeJudge,
    PipeLLM,
    PipeParallel,
    PipeSearch,
    PipeSequence,
    SubPipe,
)
from durapipe.adapters.mthds._deck import ModelDeck
from durapipe.adapters.mthds._library import (
    ConceptTarget,
    Library,
    PipeTarget,
    is_optional,
    resolve_concept,
    resolve_pipe,
    split_multiplicity,
)
from durapipe.adapters.mthds._lists import reads_flat_list, returns_list
from durapipe.adapters.mthds._llm import drafted, llm, pipe_llm, redraft
from durapipe.adapters.mthds._natives import NATIVE_STRUCTURES, NATIVE_TYPES, structures_of
from durapipe.adapters.mthds._state import Translation, model
from durapipe.spec import (
    BatchPipe,
    Branch,
    ConditionPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    ParallelPipe,
    Pipeline,
    SequencePipe,
    Step,
    StructureSpec,
    ToolPipe,
)
from durapipe.spec._spec import AnyPipe, ComposePipe

_FIELD_TYPES = {"text": "text", "integer": "integer", "number": "number", "boolean": "boolean"}
_ASPECT_SIZES = {
    "square": "1024x1024",
    "landscape_4_3": "1024x768",
    "landscape_3_2": "1536x1024",
    "landscape_16_9": "1792x1024",
    "landscape_21_9": "2016x864",
    "portrait_3_4": "768x1024",
    "portrait_2_3": "1024x1536",
    "portrait_9_16": "1024x1792",
    "portrait_9_21": "864x2016",
}
_DOTTED_FUNCTION = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")


def translate(library: Library, deck: ModelDeck) -> tuple[Pipeline, list[Problem], str | None]:
    """The durapipe pipeline for every pipe of ``library`` (and the dependency pipes it uses)."""
    state = Translation(library, deck)
    for bundle in library.bundles:
        for code in bundle.pipes:
            pipe_name(state, PipeTarget(library, bundle, code))
    main = library.main_pipe or next((b.main_pipe for b in library.bundles if b.main_pipe), None)
    if main is not None:
        for bundle in library.bundles:
            if main in bundle.pipes:
                state.main_pipe = state.names[(id(library), bundle.domain, main)]
    _widen_inputs(state)
    pipeline = Pipeline(
        default_model=deck.default.get("llm"),
        models=state.models,
        structures=state.structures,
        pipes=state.pipes,
    )
    return pipeline, state.problems, state.main_pipe


def pipe_name(state: Translation, target: PipeTarget) -> str:
    """The durapipe name of an MTHDS pipe, translating it the first time it is met.

    Pipes of the package keep their code (``domain-code`` when two domains share it); pipes of a
    dependency are ``alias-domain-code`` (durapipe names allow letters, digits, '_' and '-').
    """
    key = (id(target.library), target.bundle.domain, target.code)
    if key in state.names:
        return state.names[key]
    domain = target.bundle.domain.replace(".", "_")
    if target.library.alias:
        name = f"{target.library.alias}-{domain}-{target.code}"
    else:
        shared = sum(1 for b in target.library.bundles if target.code in b.pipes) > 1
        name = f"{domain}-{target.code}" if shared else target.code
    state.names[key] = name
    translated = _pipe(state, target, name)
    if translated is not None:
        state.pipes[name] = translated
    return name


def _pipe(state: Translation, target: PipeTarget, name: str) -> AnyPipe | None:
    bundle, blueprint, code = target.bundle, target.blueprint, target.code
    where, key = f"pipe '{code}'", f"pipe.{code}"
    inputs: dict[str, str] = {}
    for input_name, ref in blueprint.inputs.items():
        if "." in input_name:
            # A dotted input (`doc.title`) reads a field of `doc`: the pipe takes `doc` itself,
            # whose full type the pipe does not declare, and its templates read the field.
            inputs.setdefault(input_name.split(".")[0], "any")
        else:
            inputs[input_name] = type_of(state, target.library, bundle, ref)
            if is_optional(ref):
                inputs[input_name] = f"optional[{inputs[input_name]}]"
    output = type_of(state, target.library, bundle, blueprint.output)
    common: dict[str, Any] = {"description": blueprint.description, "inputs": inputs}
    if isinstance(blueprint, PipeLLM):
        system = (
            blueprint.system_prompt if blueprint.system_prompt is not None else bundle.system_prompt
        )
        system = _template(system, inputs) if system else None
        prompt = _template(blueprint.prompt or "", inputs)
        return pipe_llm(state, name, blueprint, common, system, prompt, output)
    if isinstance(blueprint, PipeFunc):
        function = blueprint.function_name
        if not _DOTTED_FUNCTION.match(function):
            state.report(
                bundle,
                f"{where}, field 'function_name'",
                f"'{function}' must be a dotted path to a Python function (e.g. my_package.text_utils.{function}); durapipe imports it from the bundle's folder or the Python path",
                f"{key}.function_name",
            )
            return None
        module, _, attribute = function.rpartition(".")
        return ToolPipe(**common, function=f"{module}:{attribute}", output=output)
    if isinstance(blueprint, PipeImgGen):
        if output != "image" and not re.fullmatch(r"list\[image, ([1-9]|10)\]", output):
            state.report(
                bundle,
                f"{where}, field 'output'",
                f"a PipeImgGen makes an Image or a counted list of them (Image[3], at most 10); "
                f"'{blueprint.output}' does not say how many images to make",
                f"{key}.output",
            )
            return None
        resolved = model(state, blueprint.model, "image")
        prompt = _template(blueprint.prompt, inputs)
        if blueprint.negative_prompt:
            prompt += f"\nAvoid: {blueprint.negative_prompt}"
        return ImagePipe(
            **common,
            model=resolved.model,
            fallbacks=list(resolved.fallbacks),
            output=output,
            prompt=prompt,
            size=_ASPECT_SIZES[blueprint.aspect_ratio or "square"],
            # background, output_format, seed and is_raw are image generation parameters; the
            # pipe's own value wins over its model's.
            settings={**resolved.settings, **_image_options(blueprint)},
        )
    if isinstance(blueprint, PipeExtract):
        if len(inputs) != 1:
            return None
        resolved = model(state, blueprint.model, "extract")
        return ExtractPipe(**common, model=resolved.model, fallbacks=list(resolved.fallbacks))
    if isinstance(blueprint, PipeSearch):
        for structure_name, structure in structures_of("SearchResult").items():
            state.structures.setdefault(structure_name, structure)
        prompt = _template(blueprint.prompt, inputs)
        system = _search_system(blueprint)
        return llm(state, common, blueprint.model, system, prompt, output, kind="search")
    if isinstance(blueprint, PipeJudge):
        judged = _judge.judge(blueprint, name, output, state.structures)
        if isinstance(judged, str):
            state.report(bundle, f"{where}, field 'output'", judged, f"{key}.output")
        if not isinstance(judged, _judge.Judged):
            return None
        state.structures.update(judged.structures)
        prompt = _template(judged.prompt, inputs)
        return llm(state, common, blueprint.model, _judge.SYSTEM, prompt, judged.output)
    if isinstance(blueprint, PipeCompose):
        return _compose(state, target, common, output)
    if isinstance(blueprint, PipeSequence):
        return _sequence(state, target, common, output)
    if isinstance(blueprint, PipeParallel):
        branches = {}
        for branch in blueprint.branches:
            child = _ref(state, target, branch.pipe)
            if child is None:
                return None
            branches[branch.result or branch.pipe.rpartition(".")[2]] = Branch(
                pipe=_variant(state, child, branch, target)
            )
        return ParallelPipe(**common, branches=branches)
    if isinstance(blueprint, PipeCondition):
        return _condition(state, target, blueprint, common)
    if isinstance(blueprint, PipeBatch):
        child = _ref(state, target, blueprint.branch_pipe_code)
        if child is None or blueprint.input_list_name not in inputs:
            return None
        # A branch that makes a list: MTHDS cannot name a list of lists, so the declared
        # `X[]` output is the branches' lists joined.
        return BatchPipe(
            **common,
            over=blueprint.input_list_name,
            item=blueprint.input_item_name,
            pipe=child,
            flatten=returns_list(state.pipes, target, blueprint.branch_pipe_code, child),
        )
    return None


def _image_options(pipe: PipeImgGen) -> dict[str, Any]:
    """The PipeImgGen fields that are image generation settings, where the pipe sets them
    (``seed = "auto"`` lets the model pick one: nothing to send)."""
    options = {
        "background": pipe.background,
        "output_format": pipe.output_format,
        "seed": None if pipe.seed == "auto" else pipe.seed,
        "raw": pipe.is_raw,
    }
    return {name: value for name, value in options.items() if value is not None}


def _search_system(pipe: PipeSearch) -> str:
    """How a search becomes a model call: web search with the pipe's filters, cited sources."""
    filters = []
    if pipe.from_date:
        filters.append(f"published on or after {pipe.from_date}")
    if pipe.to_date:
        filters.append(f"published on or before {pipe.to_date}")
    if pipe.include_domains:
        filters.append(f"only from {', '.join(pipe.include_domains)}")
    if pipe.exclude_domains:
        filters.append(f"never from {', '.join(pipe.exclude_domains)}")
    limits = f" Use only sources {'; '.join(filters)}." if filters else ""
    inline = pipe.model.get("max_results") if isinstance(pipe.model, dict) else None
    most = pipe.max_results if pipe.max_results is not None else inline
    if isinstance(most, int):
        limits += f" Cite at most {most} sources."
    settings = pipe.model if isinstance(pipe.model, dict) else {}
    if settings.get("include_inline_citations") is False:
        limits += " Write the answer without inline citation marks: the sources cite it."
    else:  # inline citations are the spec's default
        limits += (
            " In the answer, mark each statement with the number of the source it comes from "
            "([1], [2], ... in the order of the sources)."
        )
    return (
        "Search the web for the query and answer it, citing each source page (title, url)." + limits
    )


def _ref(state: Translation, target: PipeTarget, ref: str) -> str | None:
    found = resolve_pipe(target.library, target.bundle, ref)
    return None if isinstance(found, str) else pipe_name(state, found)


def _variant(state: Translation, name: str, sub: SubPipe, target: PipeTarget) -> str:
    """The pipe a step runs: ``name``, or a copy asking for ``nb_output`` / ``multiple_output``."""
    if sub.nb_output is None and not sub.multiple_output:
        return name
    pipe = state.pipes.get(name)
    if isinstance(pipe, ImagePipe) and sub.nb_output:
        # A PipeImgGen step asking for N images: one call making N (the provider's n).
        variant = f"{name}-x{sub.nb_output}"
        output = "image" if sub.nb_output == 1 else f"list[image, {sub.nb_output}]"
        state.pipes.setdefault(variant, pipe.model_copy(update={"output": output}))
        return variant
    structure = drafted(state, name)  # a preliminary_text PipeLLM: its structuring call
    if not isinstance(structure or pipe, LlmPipe):
        state.report(
            target.bundle,
            f"pipe '{target.code}', step '{sub.pipe}'",
            "'nb_output' applies to PipeLLM and PipeImgGen steps, 'multiple_output' to PipeLLM "
            "steps (an image step must say how many: nb_output = 3)",
            f"pipe.{target.code}",
        )
        return name
    made = structure or pipe
    assert isinstance(made, LlmPipe)
    item = made.output[5:-1].split(",")[0] if made.output.startswith("list[") else made.output
    output = f"list[{item}, {sub.nb_output}]" if sub.nb_output else f"list[{item}]"
    variant = f"{name}-x{sub.nb_output}" if sub.nb_output else f"{name}-list"
    if structure is not None:
        redraft(state, name, variant, output)
    else:
        state.pipes.setdefault(variant, made.model_copy(update={"output": output}))
    return variant


def _sequence(
    state: Translation, target: PipeTarget, common: dict[str, Any], output: str
) -> SequencePipe | None:
    blueprint = target.blueprint
    assert isinstance(blueprint, PipeSequence)
    steps: list[Step] = []
    last = ""
    names: set[str] = set()
    for index, sub in enumerate(blueprint.steps):
        child = _ref(state, target, sub.pipe)
        if child is None:
            return None
        child = _variant(state, child, sub, target)
        result = sub.result or sub.pipe.rpartition(".")[2]
        step_name = result if result not in names else f"{result}_{index + 1}"
        names.add(step_name)
        if sub.batch_over is not None and sub.batch_as is not None:
            # Pipelex keeps a batch of lists nested; a later step declaring the result `X[]`
            # (MTHDS has no list of lists) gets the lists joined.
            flatten = returns_list(state.pipes, target, sub.pipe, child) and reads_flat_list(
                target, blueprint.steps[index + 1 :], result
            )
            child = _inline_batch(
                state, target, index, child, sub.batch_over, sub.batch_as, flatten=flatten
            )
        steps.append(Step(pipe=child, name=step_name, result=result))
        last = result
        mapped = state.pipes.get(child)
        source = target.library.bundles and resolve_pipe(target.library, target.bundle, sub.pipe)
        if isinstance(mapped, ParallelPipe) and not isinstance(source, str) and source:
            parallel = source.blueprint
            if isinstance(parallel, PipeParallel) and parallel.add_each_output:
                # add_each_output: every branch result joins the sequence's working memory.
                steps += [
                    Step.model_validate({"from": f"{result}.{b}", "result": b})
                    for b in mapped.branches
                ]
    return SequencePipe(**common, steps=steps, output=last)


def _inline_batch(
    state: Translation,
    target: PipeTarget,
    index: int,
    child: str,
    over: str,
    item: str,
    *,
    flatten: bool = False,
) -> str:
    """A batch pipe for a step with ``batch_over``/``batch_as``: ``child`` mapped over the list."""
    mapped = state.pipes.get(child)
    item_type = mapped.inputs.get(item, "any") if mapped is not None else "any"
    name = (
        f"{state.names[(id(target.library), target.bundle.domain, target.code)]}-batch{index + 1}"
    )
    # `batch_over` may name a list field of an earlier result (`reading.items`): the batch takes
    # that result and maps over the field.
    root, _, path = over.partition(".")
    state.pipes[name] = BatchPipe(
        description=f"step {index + 1} of {target.code}, mapped over '{over}'",
        inputs={root: "any"} if path else {over: f"list[{item_type}]"},
        over=over,
        item=item,
        pipe=child,
        flatten=flatten,
    )
    return name


def _condition(
    state: Translation, target: PipeTarget, blueprint: PipeCondition, common: dict[str, Any]
) -> ConditionPipe | SequencePipe | None:
    expression: str | None = blueprint.expression
    if expression is not None:
        expression = _shorthand.native_fields("{{" + expression + "}}", common["inputs"])[2:-2]
    alias = blueprint.add_alias_from_expression_to
    if expression is None and blueprint.expression_template is not None:
        expression = template_expression(blueprint.expression_template, common["inputs"])
        if expression is None:
            # `{% %}` blocks: the template is rendered first (a compose step, as for an alias)
            # and the condition routes on the rendered text.
            alias = alias or f"{target.code}_value"
            expression = f"{alias} | trim"
    if expression is None:
        return None
    outcomes: dict[str, str] = {}
    for value, ref in blueprint.outcomes.items():
        # Pipelex renders a boolean as "True"/"False"; durapipe's outcome keys are "true"/"false".
        value = _BOOL_KEYS.get(value, value)
        outcomes[value] = ref if ref in ("fail", "continue") else (_ref(state, target, ref) or ref)
    default = blueprint.default_outcome
    if default not in ("fail", "continue"):
        default = _ref(state, target, default) or default
    if alias is None:
        return ConditionPipe(**common, expression=expression, outcomes=outcomes, default=default)
    condition = ConditionPipe(
        description=blueprint.description,
        inputs={**common["inputs"], alias: "text"},
        expression=expression,
        outcomes=outcomes,
        default=default,
    )
    # add_alias_from_expression_to (or a template with blocks): a sequence that first stores the
    # expression's value (a compose step) under the alias, then runs the condition, whose outcome
    # pipes can read the alias.
    name = state.names[(id(target.library), target.bundle.domain, target.code)]
    template = (
        _template(blueprint.expression_template, common["inputs"])
        if blueprint.expression_template is not None
        else "{{ " + expression + " }}"
    )
    state.pipes[f"{name}-alias"] = ComposePipe(
        description=f"the value of {target.code}'s expression",
        inputs=common["inputs"],
        template=template,
    )
    state.pipes[f"{name}-route"] = condition
    return SequencePipe(
        description=blueprint.description,
        inputs=common["inputs"],
        steps=[
            Step(pipe=f"{name}-alias", name="alias", result=alias),
            Step(pipe=f"{name}-route", name="route", result="outcome"),
        ],
        output="outcome",
    )


_BOOL_KEYS = {"True": "true", "False": "false", "None": "none"}
_SUBST = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _template(
    source: str,
    inputs: dict[str, str],
    tag_style: str = "square_brackets",
    text_format: str = "plain",
) -> str:
    """An MTHDS template as durapipe renders it: shorthands expanded, native fields read."""
    return _shorthand.native_fields(_shorthand.expand(source, tag_style, text_format), inputs)


def template_expression(template: str, inputs: dict[str, str] | None = None) -> str | None:
    """A Jinja2 expression with the value a template renders (None if it has ``{% %}`` blocks)."""
    if "{%" in template:
        return None
    template = _template(template, inputs or {}).strip()
    whole = _SUBST.fullmatch(template)
    if whole is not None and "{{" not in whole.group(1):
        return whole.group(1).strip()
    parts: list[str] = []
    position = 0
    for match in _SUBST.finditer(template):
        if match.start() > position:
            parts.append(repr(template[position : match.start()]))
        parts.append(f"(({match.group(1).strip()}) | string)")
        position = match.end()
    if position < len(template):
        parts.append(repr(template[position:]))
    return " ~ ".join(parts) or "''"


def _compose(
    state: Translation, target: PipeTarget, common: dict[str, Any], output: str
) -> ComposePipe | None:
    blueprint = target.blueprint
    assert isinstance(blueprint, PipeCompose)
    if blueprint.template is not None:
        if isinstance(blueprint.template, str):
            return ComposePipe(
                **common, template=_template(blueprint.template, common["inputs"]), output=output
            )
        table = blueprint.template
        style = dict(table.templating_style or {})
        tag_style = str(style.get("tag_style", "square_brackets"))
        problem = None
        if tag_style not in _shorthand.TAG_STYLES:
            problem = f"tag_style '{tag_style}' is not one of {', '.join(_shorthand.TAG_STYLES)}"
        elif str(style.get("text_format", "plain")) not in _shorthand.TEXT_FORMATS:
            formats = ", ".join(_shorthand.TEXT_FORMATS)
            problem = f"text_format '{style['text_format']}' is not one of {formats}"
        context = table.extra_context or {}
        literals = {k: _jinja_literal(v) for k, v in context.items()}
        if problem is None and any(v is None for v in literals.values()):
            problem = (
                "extra_context values must be text, numbers, booleans, or lists/tables of them"
            )
        if problem is not None:
            state.report(
                target.bundle,
                f"pipe '{target.code}', field 'template'",
                problem,
                f"pipe.{target.code}.template",
            )
            return None
        # extra_context: constants of the template, set before its text.
        prelude = "".join(f"{{% set {k} = {v} %}}" for k, v in literals.items())
        text_format = str(style.get("text_format", "plain"))
        source = prelude + _template(table.template, common["inputs"], tag_style, text_format)
        return ComposePipe(**common, template=source, output=output)
    if blueprint.construct_ is None:
        return None
    return ComposePipe(
        **common, build=_shorthand.construct(blueprint.construct_, common["inputs"]), output=output
    )


def _jinja_literal(value: Any) -> str | None:
    """``value`` as a Jinja2 literal (None when it is not plain data)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list):
        items = [_jinja_literal(v) for v in value]
        return None if None in items else "[" + ", ".join(str(i) for i in items) + "]"
    if isinstance(value, dict):
        pairs = [(repr(str(k)), _jinja_literal(v)) for k, v in value.items()]
        if any(v is None for _, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return None


def type_of(state: Translation, library: Library, bundle: Bundle, ref: str) -> str:
    """The durapipe type of concept reference ``ref`` (with multiplicity)."""
    try:
        code, count, is_list = split_multiplicity(ref)
    except ValueError:
        return "any"
    item = _concept_type(state, library, bundle, code, set())
    if not is_list:
        return item
    return f"list[{item}, {count}]" if count is not None else f"list[{item}]"


def _concept_type(
    state: Translation, library: Library, bundle: Bundle, ref: str, seen: set[str]
) -> str:
    target = resolve_concept(library, bundle, ref)
    if isinstance(target, str) or ref in seen:
        return "any"
    if target.native:
        for name, structure in structures_of(target.code).items():
            state.structures.setdefault(name, structure)
        return NATIVE_TYPES[target.code]
    return _declared_type(state, target, seen | {ref})


def _declared_type(state: Translation, target: ConceptTarget, seen: set[str]) -> str:
    assert target.bundle is not None and target.library is not None
    concept = target.bundle.concepts[target.code]
    if concept.refines is not None:
        return _concept_type(state, target.library, target.bundle, concept.refines, seen)
    if not isinstance(concept.structure, dict):
        return "text"  # a concept with no structure holds text, as in Pipelex
    key = (id(target.library), target.bundle.domain, target.code)
    if key in state.structure_names:
        return state.structure_names[key]
    name = target.code
    if name in state.structures or name in NATIVE_STRUCTURES:
        name = f"{target.bundle.domain.replace('.', '_')}_{target.code}"
    state.structure_names[key] = name
    fields: dict[str, Any] = {}
    for field_name, spec in concept.structure.items():
        if isinstance(spec, str):
            fields[field_name] = {"type": "text", "description": spec, "optional": True}
            continue
        fields[field_name] = _field(state, target, spec, seen)
    state.structures[name] = StructureSpec(description=concept.description, fields=fields)
    return name


def _field(
    state: Translation, target: ConceptTarget, spec: FieldBlueprint, seen: set[str]
) -> dict[str, Any]:
    assert target.bundle is not None and target.library is not None
    library, bundle = target.library, target.bundle
    out: dict[str, Any] = {"description": spec.description, "optional": not spec.required}
    if spec.choices:
        out["type"] = "text"
        out["choices"] = list(spec.choices)
    elif spec.type == "concept" and spec.concept_ref:
        out["type"] = _concept_type(state, library, bundle, spec.concept_ref, seen)
    elif spec.type == "list":
        if spec.item_type == "concept" and spec.item_concept_ref:
            item = _concept_type(state, library, bundle, spec.item_concept_ref, seen)
        else:
            item = _FIELD_TYPES.get(spec.item_type or "text", "any")
        out["type"] = f"list[{item}]"
    elif spec.type in ("dict", None):
        out["type"] = "any"
    else:
        out["type"] = _FIELD_TYPES.get(spec.type, "text")  # a date travels as ISO 8601 text
    if spec.default_value is not None:
        out["default"] = spec.default_value
    return out


def _widen_inputs(state: Translation) -> None:
    """Give each controller every input its pipes read from outside it.

    In MTHDS a sub-pipe reads the whole working memory; in durapipe a controller passes on only
    its declared inputs. So a controller's inputs grow by what its children read and it does not
    produce itself: the same values reach the same pipes.
    """
    done: dict[str, dict[str, str]] = {}

    def needs(name: str, trail: frozenset[str]) -> dict[str, str]:
        if name in done:
            return done[name]
        pipe = state.pipes.get(name)
        if pipe is None or name in trail:
            return {}
        trail = trail | {name}
        wanted = dict(pipe.inputs)
        if isinstance(pipe, SequencePipe):
            produced: set[str] = set(pipe.inputs)
            for step in pipe.steps:
                if step.pipe is not None:
                    for k, v in needs(step.pipe, trail).items():
                        if k not in produced:
                            wanted.setdefault(k, v)
                produced.add(step.result_name)
        elif isinstance(pipe, ParallelPipe):
            for branch in pipe.branches.values():
                for k, v in needs(branch.pipe, trail).items():
                    wanted.setdefault(k, v)
        elif isinstance(pipe, ConditionPipe):
            for target in {*pipe.outcomes.values(), pipe.default or ""}:
                for k, v in needs(target, trail).items():
                    wanted.setdefault(k, v)
        elif isinstance(pipe, BatchPipe):
            for k, v in needs(pipe.pipe, trail).items():
                if k != pipe.item:
                    wanted.setdefault(k, v)
        if wanted != pipe.inputs:
            state.pipes[name] = pipe.model_copy(update={"inputs": wanted})
        done[name] = wanted
        return wanted

    for name in list(state.pipes):
        needs(name, frozenset())
