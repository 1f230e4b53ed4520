"""The MTHDS validation rules (`docs/implementers/validation-rules.md`, stages 2-5 and 7).

Every rule reports one `Problem` naming bundle, pipe (or concept) and field, at the TOML line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from durapipe._errors import Problem
from durapipe.adapters.mthds import _judge, _shorthand
from durapipe.adapters.mthds._bundle import (
    Bundle,
    FieldBlueprint,
    PipeBatch,
    PipeBlueprint,
    PipeCompose,
    PipeCondition,
    PipeExtract,
    PipeImgGen,
    PipeJudge,
    PipeLLM,
    PipeParallel,
    PipeSearch,
    PipeSequence,
)
from durapipe.adapters.mthds._judge_files import question_files
from durapipe.adapters.mthds._library import (
    NATIVE_CONCEPTS,
    RESERVED_DOMAINS,
    Library,
    refines,
    resolve_concept,
    resolve_pipe,
    split_multiplicity,
)
from durapipe.adapters.mthds._reads import list_reads
from durapipe.spec import _templates

_DOMAIN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_PASCAL = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
_INPUT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
# Template names the spec excludes from the declared-input check.
_SPECIAL_VARS = frozenset({"preliminary_text", "place_holder"})
_DEFAULT_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "dict": (dict,),
}
_SPECIAL_OUTCOMES = ("fail", "continue")

Report = Callable[[str, str, str], None]


def check_library(library: Library) -> list[Problem]:
    """Every rule broken by the bundles of ``library`` (and its dependencies), in file order."""
    problems: list[Problem] = []
    for dep in library.dependencies():
        problems += check_library(dep)
    for bundle in library.bundles:

        def report(where: str, message: str, key: str, bundle: Bundle = bundle) -> None:
            problems.append(
                Problem(f"bundle '{bundle.domain or '?'}', {where}", message, bundle.where(key))
            )

        _check_header(bundle, report)
        for code, concept in bundle.concepts.items():
            _check_concept(library, bundle, code, report)
            del concept
        for code, pipe in bundle.pipes.items():
            _check_pipe(library, bundle, code, pipe, report)
    problems += _collisions(library)
    return problems


def _check_header(bundle: Bundle, report: Report) -> None:
    if bundle.domain and not _DOMAIN.match(bundle.domain):
        report(
            "header",
            f"field 'domain': '{bundle.domain}' is not a domain code (snake_case segments "
            "separated by '.', e.g. legal.contracts)",
            "domain",
        )
    elif bundle.domain.split(".")[0] in RESERVED_DOMAINS:
        report(
            "header",
            f"field 'domain': '{bundle.domain}' starts with the reserved domain "
            f"'{bundle.domain.split('.')[0]}' ({', '.join(sorted(RESERVED_DOMAINS))} are reserved)",
            "domain",
        )
    if bundle.main_pipe is not None:
        if not _SNAKE.match(bundle.main_pipe):
            report(
                "header", f"field 'main_pipe': '{bundle.main_pipe}' is not snake_case", "main_pipe"
            )
        elif bundle.main_pipe not in bundle.pipes:
            report(
                "header",
                f"field 'main_pipe': '{bundle.main_pipe}' is not a pipe of this bundle",
                "main_pipe",
            )


def _check_concept(library: Library, bundle: Bundle, code: str, report: Report) -> None:
    concept = bundle.concepts[code]
    where, key = f"concept '{code}'", f"concept.{code}"
    if not _PASCAL.match(code):
        report(where, "a concept code must be PascalCase (e.g. ContractClause)", key)
    if code in NATIVE_CONCEPTS:
        report(where, f"'{code}' is a native concept; give the concept another code", key)
    if concept.refines is not None and concept.structure is not None:
        report(where, "'refines' and 'structure' must not both be set", f"{key}.refines")
    if concept.refines is not None:
        target = resolve_concept(library, bundle, concept.refines)
        if isinstance(target, str):
            report(f"{where}, field 'refines'", target, f"{key}.refines")
        elif (cycle := _refinement_cycle(library, bundle, code)) is not None:
            report(
                f"{where}, field 'refines'",
                f"concepts refine each other in a cycle: {' -> '.join(cycle)}",
                f"{key}.refines",
            )
    if isinstance(concept.structure, dict):
        for name, spec in concept.structure.items():
            fkey = f"{key}.structure.{name}"
            fwhere = f"{where}, field '{name}'"
            if name.startswith("_"):
                report(fwhere, "field names starting with '_' are reserved", fkey)
            if isinstance(spec, FieldBlueprint):
                for message in _field_problems(library, bundle, spec):
                    report(fwhere, message, fkey)


def _refinement_cycle(library: Library, bundle: Bundle, code: str) -> list[str] | None:
    """The refinement chain from ``code`` back to itself, if it loops."""
    chain = [code]
    current_bundle, current = bundle, code
    for _ in range(64):
        concept = current_bundle.concepts.get(current)
        if concept is None or concept.refines is None:
            return None
        target = resolve_concept(library, current_bundle, concept.refines)
        if isinstance(target, str) or target.bundle is None:
            return None
        current_bundle, current = target.bundle, target.code
        chain.append(current)
        if current_bundle is bundle and current == code:
            return chain
    return None


def _field_problems(library: Library, bundle: Bundle, spec: FieldBlueprint) -> list[str]:
    found: list[str] = []
    if spec.type is None and not spec.choices:
        found.append("'type' is required unless 'choices' is given")
    # The spec's format page says 'type' MUST be left out with 'choices'; its validation checklist
    # does not check it, and the standard library (mthds-std) and Pipelex's methods write
    # `type = "text"` beside `choices`, which Pipelex runs. A text type agrees with the choices
    # (they are strings); any other type contradicts them.
    if spec.type not in (None, "text") and spec.choices:
        found.append(f"choices are text: 'type' must be \"text\" or left out, not '{spec.type}'")
    if spec.type == "dict" and not (spec.key_type and spec.value_type):
        found.append("type 'dict' needs both 'key_type' and 'value_type'")
    if spec.type == "concept":
        if not spec.concept_ref:
            found.append("type 'concept' needs 'concept_ref'")
        if spec.default_value is not None:
            found.append("type 'concept' cannot have a 'default_value'")
    if spec.concept_ref and spec.type != "concept":
        found.append("'concept_ref' is only allowed with type = \"concept\"")
    if spec.type == "list" and spec.item_type == "concept" and not spec.item_concept_ref:
        found.append("item_type 'concept' needs 'item_concept_ref'")
    if spec.item_concept_ref and spec.item_type != "concept":
        found.append("'item_concept_ref' is only allowed with item_type = \"concept\"")
    for ref in (spec.concept_ref, spec.item_concept_ref):
        if ref:
            target = resolve_concept(library, bundle, ref)
            if isinstance(target, str):
                found.append(target)
    default = spec.default_value
    if default is not None and spec.choices and default not in spec.choices:
        found.append(f"default_value {default!r} is not one of the choices {spec.choices}")
    expected = _DEFAULT_TYPES.get(spec.type or "")
    if default is not None and expected is not None:
        wrong_bool = isinstance(default, bool) and spec.type in ("integer", "number")
        if wrong_bool or not isinstance(default, expected):
            found.append(f"default_value {default!r} does not match type '{spec.type}'")
    return found


def _check_pipe(
    library: Library, bundle: Bundle, code: str, pipe: PipeBlueprint, report: Report
) -> None:
    where, key = f"pipe '{code}'", f"pipe.{code}"
    if not _SNAKE.match(code):
        report(where, "a pipe code must be snake_case (e.g. extract_clause)", key)
    for name, ref in pipe.inputs.items():
        if not _INPUT.match(name):
            report(
                f"{where}, input '{name}'",
                "an input name must be snake_case",
                f"{key}.inputs.{name}",
            )
        _check_concept_ref(
            library, bundle, ref, f"{where}, input '{name}'", f"{key}.inputs.{name}", report
        )
    _check_concept_ref(
        library, bundle, pipe.output, f"{where}, field 'output'", f"{key}.output", report
    )
    has_list = _is_list(pipe.output)
    if isinstance(pipe, PipeLLM):
        _check_prompts(
            pipe.inputs,
            [("prompt", pipe.prompt), ("system_prompt", pipe.system_prompt)],
            where,
            key,
            report,
            unused_rule=True,
        )
        if pipe.prompt is None and pipe.system_prompt is None:
            report(where, "a PipeLLM needs a 'prompt' (or a 'system_prompt')", key)
    elif isinstance(pipe, PipeImgGen | PipeSearch):
        _check_prompts(
            pipe.inputs, [("prompt", pipe.prompt)], where, key, report, unused_rule=False
        )
    if isinstance(pipe, PipeJudge):
        questions = _judge.asked(pipe) if pipe.questions is not None else {}
        _check_prompts(
            pipe.inputs,
            [
                ("prompt", pipe.prompt),
                ("question", pipe.question),
                *((f"questions.{n}.question", q.question) for n, q in questions.items()),
            ],
            where,
            key,
            report,
            unused_rule=True,
        )
        for field_name, message in _judge.problems(pipe) + question_files(library, bundle, pipe):
            report(f"{where}, field '{field_name}'", message, f"{key}.{field_name}")
    if isinstance(pipe, PipeExtract):
        if len(pipe.inputs) != 1:
            report(
                f"{where}, field 'inputs'",
                f"a PipeExtract takes exactly one input, not {len(pipe.inputs)}",
                f"{key}.inputs",
            )
        if pipe.output.replace(" ", "") not in ("Page[]", "native.Page[]"):
            report(
                f"{where}, field 'output'",
                f'a PipeExtract\'s output must be "Page[]", not "{pipe.output}"',
                f"{key}.output",
            )
    if isinstance(pipe, PipeSearch) and not refines(library, bundle, pipe.output, "SearchResult"):
        report(
            f"{where}, field 'output'",
            "a PipeSearch's output must be SearchResult or a concept that refines it",
            f"{key}.output",
        )
    if isinstance(pipe, PipeCompose):
        _check_compose(pipe, where, key, has_list, report)
    if isinstance(pipe, PipeSequence):
        for index, step in enumerate(pipe.steps):
            swhere, skey = f"{where}, step {index + 1} ('{step.pipe}')", f"{key}.steps.{index}"
            if step.nb_output is not None and step.multiple_output is not None:
                report(swhere, "'nb_output' and 'multiple_output' must not both be set", skey)
            if (step.batch_over is None) != (step.batch_as is None):
                report(swhere, "'batch_over' and 'batch_as' go together: set both or neither", skey)
            elif step.batch_over is not None and step.batch_over == step.batch_as:
                report(swhere, "'batch_over' and 'batch_as' must differ", skey)
            _check_pipe_ref(library, bundle, step.pipe, swhere, skey, report)
        for rwhere, message, rkey in list_reads(library, bundle, code, pipe):
            report(rwhere, message, rkey)
    if isinstance(pipe, PipeParallel):
        if not pipe.add_each_output and pipe.combined_output is None:
            report(
                where,
                "set 'add_each_output = true' or 'combined_output' (otherwise the pipe has no output)",
                key,
            )
        if pipe.combined_output is not None:
            _check_concept_ref(
                library,
                bundle,
                pipe.combined_output,
                f"{where}, field 'combined_output'",
                f"{key}.combined_output",
                report,
            )
        for index, branch in enumerate(pipe.branches):
            bwhere, bkey = (
                f"{where}, branch {index + 1} ('{branch.pipe}')",
                f"{key}.branches.{index}",
            )
            if branch.batch_over is not None or branch.batch_as is not None:
                report(
                    bwhere,
                    "'batch_over'/'batch_as' apply to sequence steps, not parallel branches",
                    bkey,
                )
            _check_pipe_ref(library, bundle, branch.pipe, bwhere, bkey, report)
    if isinstance(pipe, PipeCondition):
        if (pipe.expression is None) == (pipe.expression_template is None):
            report(where, "set exactly one of 'expression_template' or 'expression'", key)
        for outcome, target in pipe.outcomes.items():
            if target not in _SPECIAL_OUTCOMES:
                _check_pipe_ref(
                    library,
                    bundle,
                    target,
                    f"{where}, outcome '{outcome}'",
                    f"{key}.outcomes.{outcome}",
                    report,
                )
        if pipe.default_outcome not in _SPECIAL_OUTCOMES:
            _check_pipe_ref(
                library,
                bundle,
                pipe.default_outcome,
                f"{where}, field 'default_outcome'",
                f"{key}.default_outcome",
                report,
            )
    if isinstance(pipe, PipeBatch):
        bwhere = f"{where}, field"
        if pipe.input_list_name not in pipe.inputs:
            report(
                f"{bwhere} 'input_list_name'",
                f"'{pipe.input_list_name}' is not one of the pipe's inputs ({', '.join(pipe.inputs) or 'none'})",
                f"{key}.input_list_name",
            )
        if not pipe.input_item_name:
            report(f"{bwhere} 'input_item_name'", "must not be empty", f"{key}.input_item_name")
        elif pipe.input_item_name == pipe.input_list_name:
            report(
                f"{bwhere} 'input_item_name'",
                "must differ from 'input_list_name'",
                f"{key}.input_item_name",
            )
        elif pipe.input_item_name in pipe.inputs:
            report(
                f"{bwhere} 'input_item_name'",
                f"'{pipe.input_item_name}' is already an input name; the item needs its own name",
                f"{key}.input_item_name",
            )
        _check_pipe_ref(
            library,
            bundle,
            pipe.branch_pipe_code,
            f"{bwhere} 'branch_pipe_code'",
            f"{key}.branch_pipe_code",
            report,
        )


def _check_compose(pipe: PipeCompose, where: str, key: str, has_list: bool, report: Report) -> None:
    if (pipe.template is None) == (pipe.construct_ is None):
        report(where, "set exactly one of 'template' or 'construct'", key)
    if has_list:
        report(
            f"{where}, field 'output'",
            "a PipeCompose's output must be a single concept (no [] or [N])",
            f"{key}.output",
        )
    if pipe.template is not None:
        source = pipe.template if isinstance(pipe.template, str) else pipe.template.template
        context = {} if isinstance(pipe.template, str) else pipe.template.extra_context or {}
        known = {**pipe.inputs, **dict.fromkeys(context, "extra_context")}
        _check_prompts(known, [("template", source)], where, key, report, unused_rule=False)
    if pipe.construct_ is not None:
        for name, roots in _construct_roots(pipe.construct_, ""):
            for root in sorted(roots - set(_roots(pipe.inputs))):
                report(
                    f"{where}, construct field '{name}'",
                    f"'{root}' is not a declared input (declared: {', '.join(pipe.inputs) or 'none'})",
                    f"{key}.construct.{name.split('.')[0]}",
                )


def _construct_roots(construct: dict[str, object], prefix: str) -> list[tuple[str, set[str]]]:
    found: list[tuple[str, set[str]]] = []
    for name, value in construct.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and ("from" in value or "template" in value):
            roots: set[str] = set()
            if isinstance(value.get("from"), str):
                roots.add(str(value["from"]).split(".")[0])
            if isinstance(value.get("template"), str):
                roots |= _template_vars(str(value["template"]))
            found.append((path, roots))
        elif isinstance(value, dict):
            found += _construct_roots(value, f"{path}.")
    return found


def _roots(inputs: dict[str, str]) -> list[str]:
    return [name.split(".")[0] for name in inputs]


def _template_vars(source: str) -> set[str]:
    try:
        return _templates.variables(_shorthand.expand(source))
    except _templates.TemplateError:
        return set()


# A Page's `page_view` is an image of the whole page, which Pipelex renders when a PipeExtract
# sets `page_views`; durapipe's extraction reads text only, so a template reading it would fail
# at run time: it is refused when the bundle loads.
_PAGE_VIEW = re.compile(r"\.page_view\b")
_NO_PAGE_VIEWS = (
    "reads a Page's 'page_view' (an image of the whole page), which durapipe's extraction does "
    "not make yet (page_views has no effect); read the page's text (page.text_and_images) instead"
)


def _check_prompts(
    inputs: dict[str, str],
    templates: list[tuple[str, str | None]],
    where: str,
    key: str,
    report: Report,
    *,
    unused_rule: bool,
) -> None:
    used: set[str] = set()
    declared = set(_roots(inputs))
    for name in inputs:
        if _PAGE_VIEW.search(name):
            report(f"{where}, input '{name}'", _NO_PAGE_VIEWS, f"{key}.inputs")
    for field, source in templates:
        if source is None:
            continue
        if _PAGE_VIEW.search(source):
            report(f"{where}, field '{field}'", _NO_PAGE_VIEWS, f"{key}.{field}")
        try:
            names = _templates.variables(_shorthand.expand(source))
        except _templates.TemplateError as err:
            report(f"{where}, field '{field}'", str(err), f"{key}.{field}")
            return
        used |= names
        for name in sorted(names - declared - _SPECIAL_VARS):
            if not name.startswith("_"):
                report(
                    f"{where}, field '{field}'",
                    f"variable '{name}' is not a declared input (declared: {', '.join(inputs) or 'none'}); "
                    f"add it to [pipe.<code>.inputs] or remove it from the {field}",
                    f"{key}.{field}",
                )
    if unused_rule:
        fields = " or ".join(f for f, s in templates if s is not None) or "prompt"
        for name in sorted(declared - used):
            report(
                f"{where}, input '{name}'",
                f"declared input is not used in the {fields} (the spec rejects unused inputs, and "
                "Pipelex refuses them too); "
                f"use it (e.g. @{name}) or remove it",
                f"{key}.inputs.{name}",
            )


def _check_concept_ref(
    library: Library, bundle: Bundle, ref: str, where: str, key: str, report: Report
) -> None:
    try:
        code, _, _ = split_multiplicity(ref)
    except ValueError as err:
        report(where, str(err), key)
        return
    target = resolve_concept(library, bundle, code)
    if isinstance(target, str):
        report(where, target, key)


def _check_pipe_ref(
    library: Library, bundle: Bundle, ref: str, where: str, key: str, report: Report
) -> None:
    target = resolve_pipe(library, bundle, ref)
    if isinstance(target, str):
        report(where, target, key)


def _is_list(ref: str) -> bool:
    try:
        return split_multiplicity(ref)[2]
    except ValueError:
        return False


def _collisions(library: Library) -> list[Problem]:
    problems: list[Problem] = []
    seen_pipes: dict[tuple[str, str], Bundle] = {}
    seen_concepts: dict[tuple[str, str], Bundle] = {}
    for bundle in library.bundles:
        for code in bundle.pipes:
            first = seen_pipes.setdefault((bundle.domain, code), bundle)
            if first is not bundle:
                problems.append(
                    Problem(
                        f"bundle '{bundle.domain}', pipe '{code}'",
                        f"pipe '{code}' is also defined in {first.source} (same domain '{bundle.domain}'); rename one",
                        bundle.where(f"pipe.{code}"),
                    )
                )
        for code in bundle.concepts:
            first = seen_concepts.setdefault((bundle.domain, code), bundle)
            if first is not bundle:
                problems.append(
                    Problem(
                        f"bundle '{bundle.domain}', concept '{code}'",
                        f"concept '{code}' is also defined in {first.source} (same domain '{bundle.domain}'); rename one",
                        bundle.where(f"concept.{code}"),
                    )
                )
    return problems
