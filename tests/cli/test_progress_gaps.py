"""Progress for every shape of run (issue 17, item 4): a long batch's row shows its items' spend
and does not call a collecting batch failed, a waiting approval says how to decide it, and
``--local`` prints each step as it finishes, failures included."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.cli._live import render
from durapipe.cli._progress import tree_lines

runner = CliRunner()

TOOLS = '''
def check(word: str) -> str:
    """Upper-case a word; refuse the word 'bad'."""
    if word == "bad":
        raise ValueError("bad word")
    return word.upper()
'''

PIPELINE = """
pipes:
  main:
    kind: sequence
    inputs:
      words: list[text]
    steps:
      - pipe: describe_all
        result: described
      - pipe: check_all
        result: checked
    output: [described, checked]
  describe_all:
    kind: batch
    inputs:
      words: list[text]
    over: words
    item: word
    pipe: describe
  check_all:
    kind: batch
    inputs:
      words: list[text]
    over: words
    item: word
    pipe: check
    on_error: collect
  describe:
    kind: llm
    inputs: {word: text}
    prompt: "Define {{ word }}."
  check:
    kind: tool
    function: progress_gap_tools:check
    inputs: {word: text}
    output: text
    retry: {max_attempts: 1}
  strict:
    kind: sequence
    inputs: {word: text}
    steps:
      - pipe: describe
        result: first
      - pipe: check
        result: checked
"""


def write_pipeline(folder: Path) -> Path:
    (folder / "progress_gap_tools.py").write_text(TOOLS)
    file = folder / "gaps.yaml"
    file.write_text(PIPELINE)
    return file


async def test_a_long_batch_row_carries_its_items_spend_and_collect_is_not_failure(
    tmp_path: Path,
) -> None:
    pipeline = dp.load(write_pipeline(tmp_path))
    words = [f"word{i}" for i in range(59)] + ["bad"]  # 60 items: one row per batch, not 60
    result = await dp.run_local(pipeline, "main", {"words": words})
    rows = {s.path: s for s in result.steps}
    described, checked = rows["describe_all[*]"], rows["check_all[*]"]
    assert described.input_tokens > 0 and described.output_tokens > 0
    assert (described.input_tokens, described.output_tokens) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )
    assert checked.counts == {"succeeded": 59, "failed": 1}
    assert checked.status == "succeeded"  # the batch collected its one failure and succeeded
    assert len(result.output["checked"]["errors"]) == 1


def test_a_waiting_approval_shows_how_to_decide_it_and_a_batch_row_its_counts() -> None:
    records = [
        dp.StepRecord(path="draft", pipe="draft", kind="llm", status="succeeded"),
        dp.StepRecord(
            path="review",
            pipe="review",
            kind="approval",
            status="waiting",
            waiting_for="approval: Publish this post?",
        ),
        dp.StepRecord(
            path="items[*]", pipe="item", kind="llm", status="running", counts={"succeeded": 7}
        ),
    ]
    console = Console(record=True, width=200)
    console.print(render(records, "run-1"))
    text = console.export_text()
    assert (
        "⏸ review waiting for approval: Publish this post?; decide with "
        "`durapipe approve run-1 review` or `durapipe reject run-1 review`"
    ) in text
    assert "items[*]  7 succeeded" in text
    assert tree_lines(records)[1].startswith("⏸ review (approval)  waiting")


def test_local_runs_print_each_step_as_it_finishes_and_the_failed_one(tmp_path: Path) -> None:
    file = str(write_pipeline(tmp_path))
    failed = runner.invoke(app, ["run", "strict", "--file", file, "--local", "-i", "word=bad"])
    assert failed.exit_code == 1
    lines = failed.stderr.splitlines()
    assert lines[0].startswith("  ✓ describe (llm · durapipe/offline)"), failed.stderr
    assert lines[1].startswith("  ✗ check (tool)  ") and "ValueError: bad word" in lines[1]
    assert lines[2].startswith("error: step 'check' (tool) failed: ValueError: bad word")
