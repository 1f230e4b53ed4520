"""Reading a `.mthds` bundle: TOML (tomllib) into pydantic blueprints, with the TOML line of each part.

The blueprints follow the MTHDS format spec (`docs/spec/mthds-format.md`) field for field, with
``extra="forbid"`` so a misspelt field is named rather than ignored. Shape mistakes come back as
`Problem` rows naming bundle, pipe and field with the line; the spec's semantic rules are in `_rules`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from durapipe._errors import Problem


class _Blueprint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldBlueprint(_Blueprint):
    """One field of a structured concept (spec: Field Blueprint)."""

    description: str
    type: (
        Literal["text", "integer", "number", "boolean", "date", "list", "dict", "concept"] | None
    ) = None
    required: bool = False
    default_value: Any = None
    choices: list[str] | None = None
    key_type: str | None = None
    value_type: str | None = None
    item_type: str | None = None
    concept_ref: str | None = None
    item_concept_ref: str | None = None


class ConceptBlueprint(_Blueprint):
    """A concept declared as a table (``[concept.Code]``)."""

    description: str
    structure: dict[str, FieldBlueprint | str] | str | None = None
    refines: str | None = None


class SubPipe(_Blueprint):
    """A step of a PipeSequence or a branch of a PipeParallel."""

    pipe: str
    result: str | None = None
    nb_output: int | None = Field(default=None, ge=1)
    multiple_output: bool | None = None
    batch_over: str | None = None
    batch_as: str | None = None


class TemplateBlueprint(_Blueprint):
    """The table form of a PipeCompose ``template``."""

    template: str
    category: Literal[
        "basic", "expression", "html", "markdown", "mermaid", "llm_prompt", "img_gen_prompt"
    ]
    templating_style: dict[str, Any] | None = None
    extra_context: dict[str, Any] | None = None


ModelRef = str | dict[str, Any]


class PipeBlueprint(_Blueprint):
    """Fields every pipe has."""

    type: str
    description: str
    inputs: dict[str, str] = Field(default_factory=dict)
    output: str


class PipeLLM(PipeBlueprint):
    """Spec: Operator PipeLLM."""

    prompt: str | None = None
    system_prompt: str | None = None
    model: ModelRef | None = None
    model_to_structure: ModelRef | None = None
    structuring_method: Literal["direct", "preliminary_text"] | None = None


class PipeFunc(PipeBlueprint):
    """Spec: Operator PipeFunc."""

    function_name: str = Field(min_length=1)


class PipeImgGen(PipeBlueprint):
    """Spec: Operator PipeImgGen."""

    prompt: str
    negative_prompt: str | None = None
    model: ModelRef | None = None
    aspect_ratio: (
        Literal[
            "square",
            "landscape_4_3",
            "landscape_3_2",
            "landscape_16_9",
            "landscape_21_9",
            "portrait_3_4",
            "portrait_2_3",
            "portrait_9_16",
            "portrait_9_21",
        ]
        | None
    ) = None
    is_raw: bool | None = None
    seed: int | Literal["auto"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None


class PipeExtract(PipeBlueprint):
    """Spec: Operator PipeExtract."""

    model: ModelRef | None = None
    max_page_images: int | None = None
    page_image_captions: bool | None = None
    page_views: bool | None = None
    page_views_dpi: int | None = None


class PipeSearch(PipeBlueprint):
    """Spec: Operator PipeSearch."""

    prompt: str
    model: ModelRef | None = None
    from_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    to_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    include_domains: list[str] | None = None
    exclude_domains: list[str] | None = None
    # Not in the format spec's table (there they are inline model settings), but in its JSON
    # schema's PipeSearchBlueprint since mthds-ai/mthds a65272f: read here too, as a tool
    # checking bundles against the schema accepts them.
    max_results: int | None = Field(default=None, ge=1)
    include_images: bool | None = None


class PipeCompose(PipeBlueprint):
    """Spec: Operator PipeCompose (template or construct mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    template: str | TemplateBlueprint | None = None
    # `construct` is a pydantic BaseModel method name: the field keeps it only as its TOML name.
    construct_: dict[str, Any] | None = Field(default=None, alias="construct")


class PipeSequence(PipeBlueprint):
    """Spec: Controller PipeSequence."""

    steps: list[SubPipe] = Field(min_length=1)


class PipeParallel(PipeBlueprint):
    """Spec: Controller PipeParallel."""

    branches: list[SubPipe] = Field(min_length=1)
    add_each_output: bool = False
    combined_output: str | None = None


class PipeCondition(PipeBlueprint):
    """Spec: Controller PipeCondition."""

    expression_template: str | None = None
    expression: str | None = None
    outcomes: dict[str, str] = Field(min_length=1)
    default_outcome: str
    add_alias_from_expression_to: str | None = None


class PipeBatch(PipeBlueprint):
    """Spec: Controller PipeBatch."""

    branch_pipe_code: str
    input_list_name: str
    input_item_name: str


class JudgeCriteria(_Blueprint):
    """What a yes and a no mean, for a yes/no question of a PipeJudge."""

    yes: str
    no: str


class JudgeLevel(_Blueprint):
    """A rating level written as a table: a label, a description, or both."""

    label: str | None = None
    description: str | None = None


class JudgeQuestion(_Blueprint):
    """One of the several ``questions`` of a PipeJudge, keyed by the output field it fills."""

    question: str
    options: dict[str, str] | None = None
    levels: list[str | JudgeLevel] | None = None
    criteria: JudgeCriteria | None = None
    threshold: float | None = None


class PipeJudge(PipeBlueprint):
    """Pipelex's PipeJudge (not the spec's): closed questions asked about the evidence ``prompt``
    presents, yes/no, a choice among ``options`` or a rating on ``levels`` (see `_judge`)."""

    prompt: str
    question: str | None = None
    questions: dict[str, JudgeQuestion] | None = None
    model: ModelRef | None = None
    options: dict[str, str] | None = None
    levels: list[str | JudgeLevel] | None = None
    criteria: JudgeCriteria | None = None
    threshold: float | None = None


PIPE_TYPES: dict[str, type[PipeBlueprint]] = {
    "PipeLLM": PipeLLM,
    "PipeFunc": PipeFunc,
    "PipeImgGen": PipeImgGen,
    "PipeExtract": PipeExtract,
    "PipeSearch": PipeSearch,
    "PipeCompose": PipeCompose,
    "PipeSequence": PipeSequence,
    "PipeParallel": PipeParallel,
    "PipeCondition": PipeCondition,
    "PipeBatch": PipeBatch,
    "PipeJudge": PipeJudge,  # Pipelex's, beyond the spec's ten
}
CONTROLLER_TYPES = frozenset({"PipeSequence", "PipeParallel", "PipeCondition", "PipeBatch"})


@dataclass
class Bundle:
    """One parsed `.mthds` file.

    Attributes:
        source: the file name (or ``<text>``) problems point at.
        domain: the bundle's domain code.
        concepts: concept code -> blueprint (a simple declaration becomes a blueprint too).
        pipes: pipe code -> blueprint; pipes that did not parse are left out (their problems
            are reported).
        lines: TOML line of each part, keyed ``pipe.code``, ``pipe.code.field``, ``domain``, ...
        raw: the parsed TOML, for rules that look at what the blueprints drop.
    """

    source: str
    domain: str = ""
    description: str = ""
    system_prompt: str | None = None
    main_pipe: str | None = None
    concepts: dict[str, ConceptBlueprint] = field(default_factory=dict)
    pipes: dict[str, PipeBlueprint] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def where(self, key: str) -> str:
        """``source:line`` of the part ``key`` (or of its nearest enclosing part)."""
        parts = key.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line:
                return f"{self.source}:{line}"
            parts.pop()
        return self.source


_HEADER_KEYS = {"domain", "description", "system_prompt", "main_pipe", "concept", "pipe"}
_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def read_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, failing only with `tomllib.TOMLDecodeError` on any text.

    tomllib also raises RecursionError for values nested past Python's recursion limit
    (``x = [[[[...]]]]``, a few kilobytes) and ValueError for an integer longer than Python
    converts (4,300 digits): a bundle's mistake, which reached `durapipe serve` as its own bug
    (a 500 answer and a traceback in its log) and `durapipe validate` as a traceback.

    Raises:
        tomllib.TOMLDecodeError: the text is not TOML this process reads.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise tomllib.TOMLDecodeError("values are nested too deeply") from None
    except ValueError:
        raise tomllib.TOMLDecodeError("an integer has more digits than can be read") from None


def parse_bundle(text: str, source: str) -> tuple[Bundle, list[Problem]]:
    """Parse bundle TOML into a `Bundle`, with every shape problem found.

    A TOML syntax error stops there (one problem); otherwise each concept and pipe is read on its
    own, so one bad pipe does not hide the problems of the others.
    """
    bundle = Bundle(source=source)
    try:
        data = read_toml(text)
    except tomllib.TOMLDecodeError as err:
        match = _TOML_LINE.search(str(err))
        where = f"{source}:{match.group(1)}" if match else source
        message = _TOML_LINE.sub("", str(err)).strip()
        return bundle, [Problem(f"bundle '{source}'", f"not valid TOML: {message}", where)]
    data = _modernised(data)
    for kind in ("concept", "pipe"):
        if isinstance(data.get(kind), dict):
            data[kind] = {k: _modernised(v) for k, v in data[kind].items()}
    bundle.raw = data
    bundle.lines = toml_lines(text)
    problems: list[Problem] = []

    def report(where: str, message: str, key: str) -> None:
        problems.append(Problem(where, message, bundle.where(key)))

    for key in sorted(set(data) - _HEADER_KEYS):
        close = difflib.get_close_matches(key, _HEADER_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        report("header", f"unknown field '{key}'{hint}", key)
    for key in ("domain", "description", "system_prompt", "main_pipe"):
        if key in data and not isinstance(data[key], str):
            report("header", f"field '{key}' must be a string", key)
    if not isinstance(data.get("domain"), str):
        if "domain" not in data:
            report("header", "field 'domain' is required", "domain")
    else:
        bundle.domain = data["domain"]
    bundle.description = (
        data.get("description", "") if isinstance(data.get("description"), str) else ""
    )
    bundle.system_prompt = (
        data.get("system_prompt") if isinstance(data.get("system_prompt"), str) else None
    )
    bundle.main_pipe = data.get("main_pipe") if isinstance(data.get("main_pipe"), str) else None
    _parse_concepts(bundle, data.get("concept", {}), report)
    _parse_pipes(bundle, data.get("pipe", {}), report)
    if bundle.domain:
        problems = [
            Problem(f"bundle '{bundle.domain}', {p.where}", p.message, p.source) for p in problems
        ]
    return bundle, problems


Report = Any  # (where, message, line key) -> None

# Field names of Pipelex releases before the MTHDS standard, found in many public bundles; each has
# exactly one MTHDS meaning, so they are read as that (a bundle using both spellings keeps MTHDS's).
LEGACY_FIELDS = {
    "definition": "description",
    "prompt_template": "prompt",
    "pipe_map": "outcomes",
    "default_pipe_code": "default_outcome",
}
# Renames that hold for one pipe type only (Pipelex's migration guide lists each).
LEGACY_TYPE_FIELDS = {"PipeCompose": {"jinja2": "template"}, "PipeLLM": {"llm": "model"}}


# Pipe types Pipelex renamed before MTHDS: PipeOcr became PipeExtract, PipeJinja2 PipeCompose.
LEGACY_TYPES = {"PipeOcr": "PipeExtract", "PipeJinja2": "PipeCompose"}


def _modernised(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    renamed = dict(value)
    if isinstance(renamed.get("type"), str) and renamed["type"] in LEGACY_TYPES:
        renamed["type"] = LEGACY_TYPES[renamed["type"]]
    kind = renamed.get("type")
    legacy = {**LEGACY_FIELDS, **LEGACY_TYPE_FIELDS.get(kind if isinstance(kind, str) else "", {})}
    for old, new in legacy.items():
        if old in renamed and new not in renamed:
            renamed[new] = renamed.pop(old)
    return renamed


def _parse_concepts(bundle: Bundle, table: Any, report: Report) -> None:
    if not isinstance(table, dict):
        report("bundle", "'concept' must be a table", "concept")
        return
    for code, value in table.items():
        where, key = f"concept '{code}'", f"concept.{code}"
        if isinstance(value, str):
            bundle.concepts[code] = ConceptBlueprint(description=value)
            continue
        if not isinstance(value, dict):
            report(where, "must be a description string or a table ([concept.<Code>])", key)
            continue
        try:
            bundle.concepts[code] = ConceptBlueprint.model_validate(value)
        except pydantic.ValidationError as err:
            seen: set[tuple[str, ...]] = set()
            for error in err.errors(include_url=False):
                if tuple(map(str, error["loc"]))[:1] == ("structure",) and len(error["loc"]) <= 2:
                    # One sentence for the union (a table of fields, or a description string).
                    if ("structure",) in seen:
                        continue
                    seen.add(("structure",))
                    report(
                        where,
                        "field 'structure' must be a table of fields or a description string",
                        f"{key}.structure",
                    )
                    continue
                loc = [str(p) for p in error["loc"]]
                # `structure.<field>.<FieldBlueprint|str>...`: drop pydantic's union-member labels.
                loc = [
                    p
                    for p in loc
                    if p not in ("FieldBlueprint", "str", "dict[str,union[FieldBlueprint,str]]")
                ]
                if len(loc) >= 2 and loc[0] == "structure":
                    fwhere = f"{where}, field '{loc[1]}'"
                    message = _message(error, loc[2:], FieldBlueprint)
                    report(fwhere, message, f"{key}.structure.{loc[1]}")
                else:
                    report(where, _message(error, loc, ConceptBlueprint), ".".join([key, *loc]))


# Pipe types Pipelex runs beyond the spec's ten, seen in its public bundles, and what to write
# instead in MTHDS.
_PIPELEX_TYPES = {
    "PipeDocGen": "write the document's text with a PipeLLM or a PipeCompose template",
}


def _parse_pipes(bundle: Bundle, table: Any, report: Report) -> None:
    if not isinstance(table, dict):
        report("bundle", "'pipe' must be a table", "pipe")
        return
    for code, value in table.items():
        where, key = f"pipe '{code}'", f"pipe.{code}"
        if not isinstance(value, dict):
            report(where, "must be a table ([pipe.<code>])", key)
            continue
        kind = value.get("type")
        model = PIPE_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            if kind is None:
                report(where, f"field 'type' is required (one of {', '.join(PIPE_TYPES)})", key)
            else:
                close = difflib.get_close_matches(str(kind), PIPE_TYPES, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                if kind in _PIPELEX_TYPES:
                    # A real pipe type of Pipelex's, not a misspelling: say so, not "did you mean".
                    hint = f" (a Pipelex pipe type the MTHDS spec does not define: {_PIPELEX_TYPES[kind]})"
                report(
                    f"{where}, field 'type'",
                    f"unknown pipe type '{kind}'{hint} (one of {', '.join(PIPE_TYPES)})",
                    f"{key}.type",
                )
            continue
        try:
            bundle.pipes[code] = model.model_validate(value)
        except pydantic.ValidationError as err:
            for error in err.errors(include_url=False):
                loc = [str(p) for p in error["loc"]]
                if len(loc) >= 2 and loc[0] in ("steps", "branches") and loc[1].isdigit():
                    label = "step" if loc[0] == "steps" else "branch"
                    report(
                        f"{where}, {label} {int(loc[1]) + 1}",
                        _message(error, loc[2:], SubPipe),
                        ".".join([key, *loc[:2]]),
                    )
                    continue
                report(where, _message(error, loc, model, value), ".".join([key, *loc[:1]]))


def _message(error: Any, loc: list[str], model: type[BaseModel], value: Any = None) -> str:
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        known = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        kind = f" for {value['type']}" if isinstance(value, dict) and "type" in value else ""
        return f"unknown field '{dotted}'{kind}{hint}"
    if error["type"] == "missing":
        return f"field '{dotted}' is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"field '{dotted}': {message}"


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]+\")\s*=")
_ITEM_PIPE = re.compile(r"\bpipe\s*=\s*\"([^\"]+)\"")


def toml_lines(text: str) -> dict[str, int]:
    """The 1-based line of each table header and key (``pipe.code``, ``pipe.code.prompt``, ...).

    tomllib keeps no positions; a light line scan is enough to point a problem at its line.
    Steps and branches written inline are keyed ``pipe.code.steps.<i>`` by their order.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    array_key: str | None = None
    array_index = 0
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _TABLE.match(line)
        if header:
            table = [part.strip().strip('"') for part in header.group(1).split(".")]
            lines.setdefault(".".join(table), number)
            array_key = None
            continue
        key = _KEY.match(line)
        if key:
            name = key.group(1).strip('"')
            full = ".".join([*table, name])
            lines.setdefault(full, number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
            array_key = (
                full if rest.strip().startswith("[") and name in ("steps", "branches") else None
            )
            array_index = 0
            if array_key is None:
                continue
        if array_key is not None:
            for _ in _ITEM_PIPE.finditer(line):
                lines.setdefault(f"{array_key}.{array_index}", number)
                array_index += 1
    return lines
