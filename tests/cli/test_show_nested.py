"""`durapipe show` lists a nested controller's children whether the run is waiting or completed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from tests.support import eventually

NESTED = """
pipes:
  post:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: write
        result: draft
      - pipe: review
        result: approved
    output: approved
  write:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: outline
        result: plan
      - pipe: expand
        result: draft
    output: draft
  outline:
    kind: llm
    inputs: {topic: text}
    prompt: "Outline a post about {{ topic }}."
  expand:
    kind: llm
    inputs: {plan: text}
    prompt: "Write the post from {{ plan }}."
  review:
    kind: approval
    inputs: {draft: text}
    message: "Publish it?"
"""


async def show(address: str, run_id: str) -> list[str]:
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["show", run_id, "--address", address])
    assert shown.exit_code == 0, shown.stderr
    return [line.strip().split("  ")[0] for line in shown.stdout.splitlines()[1:]]


async def test_show_lists_a_finished_nested_controllers_children_while_waiting_and_after(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text(NESTED)
    pipeline = dp.load(path)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"nested-{task_queue}"
    expected = [
        "✓ write (sequence)",
        "✓ outline (llm · durapipe/offline)",
        "✓ expand (llm · durapipe/offline)",
    ]
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, "post", {"topic": "bridges"}, run_id=run_id, task_queue=task_queue
        )

        async def waiting() -> bool:
            try:
                return any(s.status == "waiting" for s in await handle.steps())
            except dp.RunStalled:  # the worker above has not polled yet (a busy machine)
                return False

        await eventually(waiting, "the approval to wait")
        # The run waits on `review`: `write` finished, and its children are listed under it.
        assert (await show(temporal_address, run_id))[:3] == expected
        await handle.approve("review")
        await handle.result()
    assert (await show(temporal_address, run_id))[:3] == expected


FAILING = """
pipes:
  main:
    kind: sequence
    inputs: {n: integer}
    steps:
      - pipe: inner
        result: out
    output: out
  inner:
    kind: sequence
    inputs: {n: integer}
    steps:
      - pipe: ok
        result: first
      - pipe: bad
        result: second
    output: second
  ok:
    kind: tool
    function: nested_tools:square
    inputs: {n: integer}
    output: integer
  bad:
    kind: tool
    function: nested_tools:boom
    inputs: {n: integer}
    output: integer
    retry: {max_attempts: 1}
"""


async def test_show_lists_a_failed_nested_controllers_children(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING)
    (tmp_path / "nested_tools.py").write_text(
        "def square(n: int) -> int:\n    return n * n\n\n\n"
        "def boom(n: int) -> int:\n    raise ValueError(f'no {n}')\n"
    )
    pipeline = dp.load(path)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"nested-failed-{task_queue}"
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, "main", {"n": 3}, run_id=run_id, task_queue=task_queue
        )
        with pytest.raises(dp.StepFailed):
            await handle.result()
    shown = await show(temporal_address, run_id)
    # The header's second line names the failed step; then the tree.
    assert shown[0] == "failed at step 'inner/bad': ValueError: no 3"
    assert shown[1:4] == ["✗ inner (sequence)", "✓ ok (tool)", "✗ bad (tool)"]
