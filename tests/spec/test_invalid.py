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
    "flow_bracket_type.yaml": [
        "flow_bracket_type.yaml:6:34: YAML: did not find expected ',' or '}' (a type with "
        "brackets inside {...} must be quoted, 'list[integer]', or its mapping written one "
        "entry a line)"
    ],
    "refines_field_type.yaml": [
        "refines_field_type.yaml:7: structure 'Firm', field 'refines': 'Firm' refines 'Verdict', "
        "but its field 'ok' holds text, which does not fit 'Verdict'.ok (boolean)"
    ],
    "unquoted_template.yaml": [
        "unquoted_template.yaml:6:14: YAML: found unhashable key (a template that starts with "
        '{{ must be quoted: "{{ ... }}")'
    ],
    "tab_indent.yaml": [
        "tab_indent.yaml:4:1: YAML: found character that cannot start any token (a tab: YAML "
        "indents with spaces only)"
    ],
    "yaml_word_names.yaml": [
        "yaml_word_names.yaml:6: YAML: the field name on is read by YAML as a boolean, not a "
        "name: quote it ('on':)",
        "yaml_word_names.yaml:8: YAML: the pipe name no is read by YAML as a boolean, not a "
        "name: quote it ('no':)",
        "yaml_word_names.yaml:14: YAML: the input name null is read by YAML as null (no value), "
        "not a name: quote it ('null':)",
    ],
    # A structure's meaning problems point at the field they name, as a pipe's point at the pipe.
    "refines_unknown.yaml": [
        "refines_unknown.yaml:8: structure 'Firm', field 'grade': choice 'two' is not of the "
        "field's type integer",
        "refines_unknown.yaml:9: structure 'Firm', field 'refines': 'Verdct' is not a structure "
        "of the pipeline (did you mean 'Verdict'?)",
    ],
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
    # A builder's pydantic error: one line per field, at the line that built it, no docs URL.
    "python_bad_retry.py": [
        "python_bad_retry.py:5: RetrySpec, field 'max_attempts': Input should be greater than or "
        "equal to 1"
    ],
    # Shape problems first (the values refused, in file order), then the meaning problems of the
    # rest: `validate` stopped at the first kind and never said 'ghost' or 'topik'. Not said:
    # 'shout', 'claims' and 'Claim' unknown (left out for their own problems), nor `typed`'s
    # output (it names the structure refused).
    "shape_and_meaning.yaml": [
        "shape_and_meaning.yaml:6: structure 'Claim', field 'text': unknown field 'required'",
        "shape_and_meaning.yaml:17: pipe 'shout': unknown kind 'llmm' (one of llm, tool, extract, "
        "image, sequence, parallel, batch, condition, agent, approval, compose)",
        "shape_and_meaning.yaml:25: pipe 'draft': field 'timeout': 'soon' is not a duration (use "
        "seconds, or e.g. '30s', '2m', '1h')",
        "shape_and_meaning.yaml:26: pipe 'claims': field 'prompt' is required",
        "shape_and_meaning.yaml:29: pipe 'claims': unknown field 'promt' (did you mean 'prompt'?)",
        "shape_and_meaning.yaml:8: pipe 'flow', step 'ghost', field 'pipe': unknown pipe 'ghost'",
        "shape_and_meaning.yaml:21: pipe 'draft', field 'prompt': template variable 'topik' is "
        "not a declared input (declared: topic)",
        "shape_and_meaning.yaml:21: pipe 'draft', input 'topic': declared input is never used by "
        "the system or prompt template",
    ],
    "step_as_name.yaml": [
        "step_as_name.yaml:6: pipe 'main', step 1: a step is a mapping, not 'summarize': "
        "write `- pipe: summarize` (or `{pipe: summarize}`)"
    ],
    "python_undeclared.py": [
        "python_undeclared.py: pipe 'summarize', field 'prompt': template variable 'audience' "
        "is not a declared input (declared: article)"
    ],
    # A recursive structure has no finite schema: refused here, not a RecursionError at run time.
    "recursive_structure.yaml": [
        "recursive_structure.yaml:12: pipe 'outline', field 'output': structure 'Section' refers to "
        "itself (Section.subsections -> Section), and durapipe's structures are not recursive: "
        "type the nested field `any` or give each level its own structure"
    ],
    "python_recursive_model.py": [
        "python_recursive_model.py: pipe 'thread', field 'output': structure 'Comment' refers to "
        "itself (Comment.replies -> Comment), and durapipe's structures are not recursive: "
        "type the nested field `any` or give each level its own structure"
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
    # A model alias's misspelt field said 'models.fast.str' and 'ModelEntry' (pydantic's union
    # branches); nested misspellings had no hint.
    # Listed by line, not in the order of pydantic's fields (the timeout came first).
    "shape_file_order.yaml": [
        "shape_file_order.yaml:2: pipe 'summarize': field 'prompt' is required",
        "shape_file_order.yaml:5: pipe 'summarize': unknown field 'promt' (did you mean 'prompt'?)",
        "shape_file_order.yaml:6: pipe 'summarize': field 'timeout': 'soon' is not a duration "
        "(use seconds, or e.g. '30s', '2m', '1h')",
    ],
    "model_alias_unknown_field.yaml": [
        "model_alias_unknown_field.yaml:2: model alias 'fast': field 'model' is required",
        "model_alias_unknown_field.yaml:2: model alias 'fast': unknown field 'modle' (did you "
        "mean 'model'?)",
        "model_alias_unknown_field.yaml:3: model alias 'slow': expected a model string (e.g. "
        "openai/gpt-4o-mini) or a mapping with 'model'",
        "model_alias_unknown_field.yaml:7: structure 'Claim', field 'text': unknown field 'tpye' "
        "(did you mean 'type'?)",
        "model_alias_unknown_field.yaml:14: pipe 'ask': unknown field 'retry.max_attempt' (did "
        "you mean 'max_attempts'?)",
    ],
    "unknown_kind.yaml": [
        "unknown_kind.yaml:2: pipe 'summarize': unknown kind 'lm' (one of llm, tool, extract, image, "
        "sequence, parallel, batch, condition, agent, approval, compose)"
    ],
    "unknown_pipe.yaml": [
        "unknown_pipe.yaml:2: pipe 'main', step 'summarise', field 'pipe': unknown pipe 'summarise' "
        "(did you mean 'summarize'?)"
    ],
    "unknown_type.yaml": [
        "unknown_type.yaml:2: pipe 'extract', field 'output': unknown type 'Claimz' "
        "(declare it under structures, or use text, integer, number, boolean, any)"
    ],
    # A structure's name mistyped gets its "did you mean", as a mistyped pipe's does.
    "unknown_structure.yaml": [
        "unknown_structure.yaml:6: pipe 'extract', field 'output': unknown type 'Claimz' "
        "(did you mean 'Claim'?)"
    ],
    "batch_bad_on_error.yaml": [
        "batch_bad_on_error.yaml:9: pipe 'shout_all': field 'on_error': Input should be 'fail' or 'collect'",
    ],
    "batch_item_collision.yaml": [
        "batch_item_collision.yaml:2: pipe 'shout_all', field 'item': item name 'word' is already the input 'word'; give the item another name",
    ],
    "batch_output_mismatch.yaml": [
        "batch_output_mismatch.yaml:3: pipe 'main', step 'join', input 'parts': 'counts' is list[integer] but pipe 'join' expects list[text]",
    ],
    "batch_over_missing.yaml": [
        "batch_over_missing.yaml:2: pipe 'shout_all', field 'over': nothing provides 'wrods' (available: words)",
    ],
    "batch_over_non_list.yaml": [
        "batch_over_non_list.yaml:2: pipe 'shout_all', field 'over': 'article' is text, not a list: a batch maps a pipe over a list",
    ],
    "batch_unknown_pipe.yaml": [
        "batch_unknown_pipe.yaml:2: pipe 'shout_all', field 'pipe': unknown pipe 'shuot' (did you mean 'shout'?)",
    ],
    "binding_missing_path.yaml": [
        "binding_missing_path.yaml:7: pipe 'main', step 'amount', field 'from': nothing provides 'invoice.totl' at step 1 (available: invoice)",
    ],
    "binding_without_result.yaml": [
        "binding_without_result.yaml:6: pipe 'main', step 1: a binding step ('from') needs 'result' and takes no 'inputs'",
    ],
    "condition_expression_syntax.yaml": [
        "condition_expression_syntax.yaml:2: pipe 'route', field 'expression': expression syntax error: unexpected 'end of template'",
    ],
    "condition_outcome_missing_input.yaml": [
        "condition_outcome_missing_input.yaml:3: pipe 'route', outcome 'true', input 'reason': nothing provides 'reason' (available: amount)",
    ],
    "condition_undeclared_variable.yaml": [
        "condition_undeclared_variable.yaml:2: pipe 'route', field 'expression': expression variable 'limit' is not a declared input (declared: amount)",
    ],
    "condition_unknown_outcome.yaml": [
        "condition_unknown_outcome.yaml:2: pipe 'route', outcome 'true': unknown pipe 'reveiw' (did you mean 'review'?); an outcome names a pipe, 'fail' or 'continue'",
        "condition_unknown_outcome.yaml:2: pipe 'route', field 'default': unknown pipe 'aprove'; an outcome names a pipe, 'fail' or 'continue'",
    ],
    "cycle_through_batch.yaml": [
        "cycle_through_batch.yaml:9: pipe 'each', step 'all', input 'items': 'text' is text but pipe 'all' expects list[text]",
        "cycle_through_batch.yaml:2: pipe 'all': pipes call each other in a cycle: all -> each -> all",
    ],
    "many_controller_problems.yaml": [
        "many_controller_problems.yaml:3: pipe 'main', step 'first', field 'from': nothing provides 'handle_all.first' at step 2 (available: tickets, handle_all)",
        "many_controller_problems.yaml:11: pipe 'handle_all', field 'item': item name 'tickets' is already the input 'tickets'; give the item another name",
        "many_controller_problems.yaml:11: pipe 'handle_all', input 'ticket': nothing provides 'ticket' (available: tickets)",
        "many_controller_problems.yaml:18: pipe 'handle', field 'expression': expression syntax error: unexpected 'end of template'",
        "many_controller_problems.yaml:18: pipe 'handle', outcome 'long': unknown pipe 'nowhere'; an outcome names a pipe, 'fail' or 'continue'",
    ],
    "parallel_missing_input.yaml": [
        "parallel_missing_input.yaml:2: pipe 'both', branch 'translated', input 'language': nothing provides 'language' (available: article)",
    ],
    "parallel_output_mismatch.yaml": [
        "parallel_output_mismatch.yaml:3: pipe 'main', step 'double', input 'n': 'both.short' is text but pipe 'double' expects integer",
    ],
    "parallel_unknown_field.yaml": [
        "parallel_unknown_field.yaml:2: pipe 'both': field 'branches' is required",
        "parallel_unknown_field.yaml:5: pipe 'both': unknown field 'branch' (did you mean 'branches'?)",
    ],
    "parallel_unknown_pipe.yaml": [
        "parallel_unknown_pipe.yaml:2: pipe 'both', branch 'long', field 'pipe': unknown pipe 'sumarize_long' (did you mean 'summarize_long'?)",
    ],
    "python_batch_over_text.py": [
        "python_batch_over_text.py: pipe 'shout_all', field 'over': 'article' is text, not a list: a batch maps a pipe over a list",
    ],
    "python_condition_typo.py": [
        "python_condition_typo.py: pipe 'route', outcome 'false': unknown pipe 'contine' (did you mean 'continue'?); an outcome names a pipe, 'fail' or 'continue'",
    ],
    "python_parallel_mismatch.py": [
        "python_parallel_mismatch.py: pipe 'main', step 'shout', input 'text': 'both' is a mapping of short but pipe 'shout' expects text",
    ],
    "step_pipe_and_from.yaml": [
        "step_pipe_and_from.yaml:6: pipe 'main', step 'amount': a step needs exactly one of 'pipe' (run a pipe) or 'from' (bind a value)",
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
