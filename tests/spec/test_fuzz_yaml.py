"""Random YAML into the loader: it only ever raises `PipelineError` (or succeeds), never a crash."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durapipe as dp
from durapipe.spec import check, kinds

_KIND_MODELS = {name: kind.spec for name, kind in kinds().items()}

PIPE_KEYS = sorted(
    {key for model in _KIND_MODELS.values() for key in model.model_fields} | {"from"}
)
STEP_KEYS = ["pipe", "from", "name", "result", "inputs"]
NAMES = ["a", "b", "main", "claims", "claim", "text", "x.y", "a.b.c", "fail", "continue", ""]
TYPES = ["text", "integer", "number", "boolean", "any", "list[text]", "list[S]", "S", "list[", "?"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(NAMES + TYPES + list(_KIND_MODELS) + ["{{ a }}", "{% for %}", "a >", "1s"]),
    st.text(max_size=12),
)


def mappings(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=6)


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(NAMES + TYPES), inner, max_size=4),
    ),
    max_leaves=12,
)
names = st.sampled_from(["a", "b", "main", "claims", "claim", "text"])
paths_or_junk = st.sampled_from(NAMES)
types = st.sampled_from(TYPES)
declared = st.dictionaries(names, types, max_size=3)
paths = st.dictionaries(names, st.one_of(names, paths_or_junk), max_size=2)
expressions = st.sampled_from(
    ["a > 1", "claims | length", "a.b", "x", "a >", "'y' if a else b", "{{"]
)
templates = st.sampled_from(
    ["{{ a }}", "{{ a }} {{ b.c }}", "{% for x in claims %}{{ x }}{% endfor %}", "{{", ""]
)
step = st.one_of(
    st.fixed_dictionaries({"pipe": names}, optional={"result": names, "inputs": paths}),
    st.fixed_dictionaries({"from": names}, optional={"result": names, "name": names}),
)
# Mostly well-formed pipes of every kind, so the semantic checks run on odd but parsable specs.
kinds = {
    "llm": {"prompt": templates, "system": templates, "output": types, "model": names},
    "tool": {"function": st.sampled_from(["m:f", "a.b:c"]), "output": types},
    "sequence": {
        "steps": st.lists(step, min_size=1, max_size=4),
        "output": st.one_of(names, st.lists(names, max_size=2), paths),
    },
    "parallel": {
        "branches": st.dictionaries(
            names,
            st.one_of(names, st.fixed_dictionaries({"pipe": names, "inputs": paths})),
            min_size=1,
            max_size=3,
        ),
        "on_error": st.sampled_from(["fail", "collect"]),
    },
    "batch": {
        "over": names,
        "item": names,
        "pipe": names,
        "pipe_inputs": paths,
        "on_error": st.sampled_from(["fail", "collect"]),
        "chunk_size": st.integers(0, 5),
        "max_concurrency": st.integers(0, 5),
    },
    "condition": {
        "expression": expressions,
        "outcomes": st.dictionaries(scalars, names, min_size=1, max_size=3),
        "default": names,
    },
}


def pipe_of(kind: str) -> st.SearchStrategy[Any]:
    fields = kinds[kind]
    return st.fixed_dictionaries(
        {"kind": st.just(kind), "inputs": declared},
        optional={**fields, "timeout": st.sampled_from([1, "2s", "1m"])},
    )


def wild_pipe_of(kind: str) -> st.SearchStrategy[Any]:
    fields = kinds[kind]
    return st.fixed_dictionaries(
        {"kind": st.just(kind), "inputs": st.one_of(declared, values)},
        optional={**fields, "timeout": scalars, "retry": values, "typo": values},
    )


pipe_values = st.one_of(values, st.lists(step, max_size=3), mappings(NAMES, values))
pipes = st.dictionaries(
    names,
    st.one_of(
        *(wild_pipe_of(kind) for kind in kinds),
        mappings(PIPE_KEYS, pipe_values),
        values,
    ),
    max_size=5,
)
well_formed_pipes = st.dictionaries(
    names, st.one_of(*(pipe_of(kind) for kind in kinds)), min_size=1, max_size=5
)
structures = st.dictionaries(
    st.sampled_from(["S", "T", "a"]),
    st.one_of(
        values,
        st.fixed_dictionaries(
            {"fields": st.dictionaries(names, st.one_of(types, values), max_size=3)}
        ),
    ),
    max_size=2,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "version": values,
        "default_model": values,
        "models": st.one_of(values, st.dictionaries(names, values, max_size=3)),
        "structures": st.one_of(values, structures),
        "pipes": pipes,
    },
)
pipelines = st.fixed_dictionaries(
    {"pipes": well_formed_pipes},
    optional={"structures": structures, "models": st.dictionaries(names, names, max_size=2)},
)


def load_and_check(text: str) -> None:
    try:
        pipeline = dp.load_yaml(text, source="fuzz.yaml")
        check(pipeline)
    except dp.PipelineError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_only_raises_pipeline_error(text: str) -> None:
    load_and_check(text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_pipeline_documents_only_raise_pipeline_error(document: dict[str, Any]) -> None:
    load_and_check(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines)
def test_random_well_formed_pipelines_only_raise_pipeline_error(document: dict[str, Any]) -> None:
    load_and_check(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        [
            "a: &x [*x]",
            "? [a, b]\n: c",
            "a: !!python/object:os.system x",
            "{a: 1, a: 2}",
            "- - -",
            "pipes: {p: {kind: batch, over: 1e400}}",
        ]
    ),
    st.text(max_size=20),
)
def test_yaml_oddities_only_raise_pipeline_error(head: str, tail: str) -> None:
    load_and_check(head + "\n" + tail)
