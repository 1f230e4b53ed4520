"""Invalid bundles are refused with the MTHDS spec's reasons, naming bundle, pipe, field and the
TOML line; every problem of a bundle is reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durapipe.adapters.mthds import MthdsError, load_mthds, validate_mthds
from durapipe.cli import app
from tests.mthds.conftest import INVALID

_EXPECT = re.compile(r"^# expect: (?P<where>.*?) ~ (?P<message>.*?)(?: @ (?P<line>\d+))?$")
FILES = sorted(INVALID.glob("*.mthds"))


def _expectation(path: Path) -> tuple[str, str, str | None]:
    match = _EXPECT.match(path.read_text(encoding="utf-8").splitlines()[0])
    assert match, f"{path.name} has no '# expect:' line"
    return match.group("where"), match.group("message"), match.group("line")


def test_there_are_at_least_30_invalid_bundles() -> None:
    assert len(FILES) >= 30


def test_a_bundle_failing_the_rules_lists_its_compose_paths_that_read_nothing_too() -> None:
    # The rules refuse the unused input; the compose path is durapipe's own check, which a
    # refused bundle did not reach: the second problem came only once the first was fixed.
    text = (INVALID / "compose_from_no_field.mthds").read_text(encoding="utf-8")
    text += """
[pipe.other]
type = "PipeLLM"
description = "d"
inputs = { a = "Text", unused = "Text" }
output = "Text"
prompt = "$a"
"""
    problems = [str(p) for p in validate_mthds(text, source="both.mthds")]
    assert any("input 'unused': declared input is not used" in p for p in problems), problems
    assert any(
        p.startswith(
            "both.mthds:15: bundle 'd', pipe 'sheet', construct field 'score': "
            "'analysis.overall_match_score' reads nothing: 'analysis' is MatchAnalysis"
        )
        for p in problems
    ), problems


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_invalid_bundle_is_refused_with_the_reason(path: Path) -> None:
    where, message, line = _expectation(path)
    problems = validate_mthds(path)
    assert problems, f"{path.name} was accepted"
    matching = [p for p in problems if where in p.where and message in p.message]
    assert matching, f"no problem like '{where} ~ {message}' in: {[str(p) for p in problems]}"
    if line is not None:
        assert any(p.source == f"{path}:{line}" for p in matching), [str(p) for p in matching]
    assert all(str(path) in p.source for p in problems)


def test_every_problem_of_a_bundle_is_reported_at_once() -> None:
    text = """domain = "native.x"
main_pipe = "Nope"

[concept.text_thing]
description = "bad code"

[pipe.Bad]
type = "PipeLLM"
description = "d"
inputs = { a = "Text", b = "Unknown" }
output = "Text"
prompt = "$a $c"
"""
    with pytest.raises(MthdsError) as raised:
        load_mthds(text, source="many.mthds")
    messages = [str(p) for p in raised.value.problems]
    for expected in (
        "many.mthds:1: bundle 'native.x', header: field 'domain'",
        "many.mthds:2: bundle 'native.x', header: field 'main_pipe'",
        "many.mthds:4: bundle 'native.x', concept 'text_thing'",
        "many.mthds:7: bundle 'native.x', pipe 'Bad': a pipe code must be snake_case",
        "many.mthds:10: bundle 'native.x', pipe 'Bad', input 'b': unknown concept 'Unknown'",
        "many.mthds:12: bundle 'native.x', pipe 'Bad', field 'prompt': variable 'c'",
        "many.mthds:10: bundle 'native.x', pipe 'Bad', input 'b': declared input is not used",
    ):
        assert any(m.startswith(expected) for m in messages), (expected, messages)


def test_cli_validate_refuses_an_invalid_bundle_in_one_sentence_per_problem() -> None:
    path = INVALID / "llm_unused_input.mthds"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"{path}:6: bundle 'd', pipe 'p', input 'z': declared input is not used" in result.output
