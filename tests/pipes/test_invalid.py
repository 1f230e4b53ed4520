"""A corpus of broken pipeline files: each fails validation with exactly the expected problems."""

from __future__ import annotations

from pathlib import Path

import pytest

import durapipe as dp

INVALID = Path(__file__).parent / "invalid"

EXPECTED = {
    "bad_retry.yaml": [
        "bad_retry.yaml:7: pipe 'summarize': field 'retry.max_attempts': Input should be greater than or equal to 1"
    ],
    "bad_timeout.yaml": [
        "bad_timeout.yaml:6: pipe 'summarize': field 'timeout': 'soon' is not a duration "
        "(use seconds, or e.g. '30s', '2m', '1h')"
    ],
    "bad_yaml.yaml": ["bad_yaml.yaml:6:1: YAML: found unexpected end of stream"],
    "cycle.yaml": ["cycle.yaml:2: pipe 'a': pipes call each other in a cycle: a -> b -> a"],
    "missing_input.yaml": [
        "missing_input.yaml:2: pipe 'main', step 'translate', input 'language': "
        "nothing provides 'language' at step 1 (available: article)"
    ],
    "missing_tool.yaml": [
        "missing_tool.yaml:2: pipe 'count', field 'function': cannot import module 'no_such_module_here' "
        "for tool 'no_such_module_here:count_words': No module named 'no_such_module_here'"
    ],
    "no_pipeline.py": [
        "no_pipeline.py: module: defines no pipeline: add `pipeline = durapipe.pipeline(...)` at module level"
    ],
    "python_undeclared.py": [
        "python_undeclared.py: pipe 'summarize', field 'prompt': template variable 'audience' "
        "is not a declared input (declared: article)"
    ],
    "template_syntax.yaml": [
        "template_syntax.yaml:2: pipe 'summarize', field 'prompt': template syntax error on line 1: unexpected '}'"
    ],
    "type_mismatch.yaml": [
        "type_mismatch.yaml:2: pipe 'main', step 'shout', input 'text': "
        "'words' is integer but pipe 'shout' expects list[text]"
    ],
    "undeclared_variable.yaml": [
        "undeclared_variable.yaml:2: pipe 'summarize', field 'prompt': template variable 'tone' "
        "is not a declared input (declared: article)"
    ],
    "unknown_alias.yaml": [
        "unknown_alias.yaml:4: pipe 'summarize', field 'model': model 'fsat' is neither a declared alias "
        "(fast) nor a provider/model string such as openai/gpt-4o-mini"
    ],
    "unknown_field.yaml": [
        "unknown_field.yaml:2: pipe 'summarize': field 'prompt' is required",
        "unknown_field.yaml:5: pipe 'summarize': unknown field 'promt' (did you mean 'prompt'?)",
    ],
    "unknown_kind.yaml": [
        "unknown_kind.yaml:2: pipe 'summarize': unknown kind 'lm' (one of llm, tool, sequence, parallel, batch, condition)"
    ],
    "unknown_pipe.yaml": [
        "unknown_pipe.yaml:2: pipe 'main', step 'summarise', field 'pipe': unknown pipe 'summarise' "
        "(did you mean 'summarize'?)"
    ],
    "unknown_type.yaml": [
        "unknown_type.yaml:2: pipe 'extract', field 'output': unknown type 'Claimz' "
        "(declare it under structures, or use text, integer, number, boolean, any)"
    ],
    "unused_input.yaml": [
        "unused_input.yaml:2: pipe 'summarize', input 'tone': declared input is never used by the system "
        "or prompt template"
    ],
}


def test_every_file_in_the_corpus_has_an_expectation() -> None:
    assert sorted(p.name for p in INVALID.iterdir() if p.suffix in (".yaml", ".py")) == sorted(
        EXPECTED
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_pipeline_reports_exactly_the_expected_problems(name: str) -> None:
    with pytest.raises(dp.PipelineError) as caught:
        dp.load(INVALID / name)
    reported = [str(p).replace(str(INVALID) + "/", "") for p in caught.value.problems]
    assert reported == EXPECTED[name]
