"""The pipe model: both spellings give one spec, and resolution fills what a run needs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.spec import check, format_duration, parse_duration
from tests.conftest import EXAMPLES


def test_yaml_and_python_spellings_produce_the_same_spec() -> None:
    from_yaml = dp.load(EXAMPLES / "brief.yaml")
    from_python = dp.load(EXAMPLES / "brief.py")
    assert from_yaml.model_dump() == from_python.model_dump()
    # Not vacuous: the spec carries the structure, the tool reference and the retry override.
    assert from_yaml.structures["Claim"].fields["importance"].choices == ["low", "medium", "high"]
    assert from_yaml.pipes["count_words"].function == "brief_tools:count_words"  # type: ignore[union-attr]
    assert from_yaml.pipes["verify"].retry == dp.RetrySpec(max_attempts=3)


def test_resolve_keeps_reachable_pipes_and_fills_models_and_policies(
    brief_yaml: dp.Pipeline,
) -> None:
    spec = dp.resolve(brief_yaml, "fact_check")
    assert list(spec.pipes) == ["fact_check", "count_words", "verify"]
    verify = spec.pipes["verify"]
    assert isinstance(verify, dp.spec.LlmPipe)
    assert verify.model == "durapipe/offline"  # the alias 'careful' is gone
    assert verify.timeout == 120.0 and verify.retry == dp.RetrySpec(max_attempts=3)
    tool = spec.pipes["count_words"]
    assert tool.timeout == 60.0 and tool.retry is not None and tool.retry.max_attempts == 3
    assert spec.models == {} and set(spec.structures) == {"Claim"}


def test_resolve_default_model_order(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = dp.pipeline(dp.llm("ask", prompt="hi"), models={"big": "openai/gpt-4o"})
    resolved = dp.resolve(pipeline, "ask", fallback_model="big")
    assert resolved.pipes["ask"].model == "openai/gpt-4o"  # type: ignore[union-attr]
    explicit = dp.resolve(pipeline, "ask", default_model="anthropic/x", fallback_model="big")
    assert explicit.pipes["ask"].model == "anthropic/x"  # type: ignore[union-attr]
    # The spec layer reads no environment: DURAPIPE_DEFAULT_MODEL reaches a run through its plan.
    monkeypatch.setenv("DURAPIPE_DEFAULT_MODEL", "big")
    assert dp.resolve(pipeline, "ask").pipes["ask"].model == dp.OFFLINE_MODEL  # type: ignore[union-attr]
    planned = pipe_run(pipeline, "ask", {}, run_id="r")
    assert planned.spec.pipes["ask"].model == "openai/gpt-4o"  # type: ignore[union-attr]
    monkeypatch.delenv("DURAPIPE_DEFAULT_MODEL")
    planned = pipe_run(pipeline, "ask", {}, run_id="r")
    assert planned.spec.pipes["ask"].model == dp.OFFLINE_MODEL  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5", 1.5),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("1d2h", 93600.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m"), (5400, "1h30m"), (45, "45s"), (0.25, "250ms"), (86400, "1d"), (3661, "1h1m1s")],
)
def test_durations_are_written_as_people_write_them_and_read_back(
    seconds: float, text: str
) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", 0, "5 parsecs", True, "1h 30m", "1.5h30m"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


class Point(BaseModel):
    """A point."""

    x: int
    label: str | None = Field(default=None, description="Optional label.")


def nearest(points: list[Point], k: int) -> list[Point]:
    """The k nearest points."""
    return points[:k]


def test_python_types_become_type_strings() -> None:
    pipe = dp.tool(nearest)
    assert pipe.spec.inputs == {"points": "list[Point]", "k": "integer"}
    assert pipe.spec.output == "list[Point]"  # type: ignore[union-attr]
    label = pipe.structures["Point"].fields["label"]
    assert label.optional and label.type == "text" and label.description == "Optional label."


def test_a_tool_must_be_importable_by_workers() -> None:
    def local_helper(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="must be defined at module level"):
        dp.tool(local_helper)


@pytest.mark.parametrize("example", ["research", "triage"])
def test_controller_examples_yaml_and_python_twins_produce_the_same_spec(example: str) -> None:
    from_yaml = dp.load(EXAMPLES / f"{example}.yaml")
    from_python = dp.load(EXAMPLES / f"{example}.py")
    assert from_yaml.model_dump() == from_python.model_dump()
    kinds = {pipe.kind for pipe in from_yaml.pipes.values()}
    assert {"sequence", "parallel", "batch", "condition"} <= kinds
    bindings = [
        step.from_
        for pipe in from_yaml.pipes.values()
        if isinstance(pipe, dp.spec.SequencePipe)
        for step in pipe.steps
        if step.from_
    ]
    assert bindings  # the `from:` spelling reached the spec


def test_condition_outcome_keys_of_both_spellings_meet_in_one_form() -> None:
    approve = dp.llm("approve", prompt="ok")
    python = dp.condition("c", expression="1 > 0", outcomes={True: approve, 3: "fail"}).spec
    from_yaml = dp.load_yaml(
        "pipes:\n  c:\n    kind: condition\n    expression: 1 > 0\n"
        "    outcomes: {true: approve, 3: fail}\n  approve: {kind: llm, prompt: ok}\n"
    ).pipes["c"]
    assert python == from_yaml
    assert python.outcomes == {"true": "approve", "3": "fail"}  # type: ignore[union-attr]


async def test_a_flattened_batch_joins_the_lists_its_pipe_makes() -> None:
    ideas = dp.llm(
        "ideas", prompt="Two ideas about {{ theme }}", inputs={"theme": str}, output="list[text, 2]"
    )
    joined = dp.batch(
        "all", over="themes", item="theme", pipe=ideas, inputs={"themes": list[str]}, flatten=True
    )
    nested = dp.batch("each", over="themes", item="theme", pipe=ideas, inputs={"themes": list[str]})
    pipeline = dp.pipeline(joined, nested)
    assert check(pipeline) == []
    themes = {"themes": ["tea", "rain", "maps"]}
    flat = (await dp.run_local(pipeline, "all", themes)).output
    lists = (await dp.run_local(pipeline, "each", themes)).output
    assert flat == [idea for pair in lists for idea in pair] and len(flat) == 6


def test_flatten_needs_a_pipe_that_makes_a_list_and_a_batch_that_fails_fast() -> None:
    one = dp.llm("one", prompt="One idea about {{ theme }}", inputs={"theme": str})
    collecting = dp.batch(
        "all",
        over="themes",
        item="theme",
        pipe=one,
        inputs={"themes": list[str]},
        flatten=True,
        on_error="collect",
    )
    problems = [str(p) for p in check(dp.pipeline(collecting))]
    assert any(
        "pipe 'all', field 'flatten': pipe 'one' returns text, not a list" in p for p in problems
    )
    assert any("use flatten only with on_error: fail" in p for p in problems), problems
