"""Record the agent histories the replay test keeps: ``python -m tests.histories.record_agents``.

Runs an agent that loops tool calls (the offline model, three rounds of ``square``), once as a
top-level run (``looper-*``) and once nested in a sequence (``asked-*``), on a fresh dev server,
and saves every workflow's history as JSON beside this script. Pipe names after the first argument
record those pipes instead: ``long_asked`` is a nested agent of 121 steps (60 rounds), recorded
with ``DURAPIPE_MAX_RUN_STEPS=100``, which its run's steps held only while the agent counted as
one step; ``guarded`` is a nested agent lent the last 7 of ``DURAPIPE_MAX_RUN_STEPS=100`` steps,
which needs all 7 (a run refused is saved too). ``SUFFIX`` (the first argument)
names the code that recorded them: ``before-turn-steps`` for the runs recorded before an agent's
turns and tool calls counted against the run's steps, ``turn-steps`` for those recorded after,
``agent-step-twice`` for those recorded while a nested agent's run counted its own step again,
``workflow-v4`` and ``workflow-v5`` for runs of those workflow versions (``workflow-v5 looper asked
long_looper`` with ``DURAPIPE_MAX_RUN_STEPS=200``).
Never re-record an existing one (see `tests.histories.record`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import durapipe as dp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
AGENTS = """
pipes:
  looper:
    kind: agent
    inputs: {question: text}
    prompt: "{{ question }}"
    tools: [square]
    max_turns: 10
    settings: {offline_tool_rounds: 3}
  asked:
    kind: sequence
    inputs: {question: text}
    steps:
      - {pipe: looper, result: answer}
  long_looper:
    kind: agent
    inputs: {question: text}
    prompt: "{{ question }}"
    tools: [square]
    max_turns: 70
    settings: {offline_tool_rounds: 60}
  long_asked:
    kind: sequence
    inputs: {question: text}
    steps:
      - {pipe: long_looper, result: answer}
  square:
    kind: tool
    function: tests.control_tools:square
    inputs: {n: integer}
    output: integer
  guarded:
    kind: sequence
    inputs: {question: text}
    steps:
      - {pipe: reserve, result: reserved}
      - {pipe: helper, result: answer}
  reserve:
    kind: condition
    inputs: {question: text}
    expression: question == "reserve"
    outcomes: {"true": reserved}
    default: continue
  reserved:
    kind: parallel
    inputs: {question: text}
    branches: {RESERVED}
  wide:
    kind: parallel
    inputs: {question: text}
    branches: {WIDE}
  say:
    kind: llm
    inputs: {question: text}
    prompt: "{{ question }}"
  helper:
    kind: agent
    inputs: {question: text}
    prompt: "{{ question }}"
    tools: [square]
    max_turns: 10
    settings: {offline_tool_rounds: 3}
""".replace("RESERVED", ", ".join(f"w{i}: wide" for i in range(15))).replace(
    "WIDE", ", ".join(f"s{i}: say" for i in range(5))
)


async def record(address: str, suffix: str, pipes: list[str]) -> list[Path]:
    sys.path.insert(0, str(ROOT))
    pipeline = dp.load_yaml(AGENTS)
    client = await dp.connect(address, pipeline=pipeline)
    saved = []
    async with dp.build_worker(client, task_queue="record"):
        for pipe in pipes:
            run_id = f"{pipe}-{suffix}"
            try:
                await dp.run(
                    client, pipeline, pipe, {"question": "square"}, run_id=run_id,
                    task_queue="record",
                )  # fmt: skip
            except dp.StepFailed as failed:  # a run its code refused is a history too
                print(f"{run_id}: {failed}")
            runs: dict[str, int] = {}
            for history in await dp.ops.fetch_histories(client, run_id=run_id):
                # A long agent goes on in fresh runs of its workflow (continue-as-new): one file
                # each, newest first (the last run under the workflow id alone).
                name = history.workflow_id.replace("/", "__")
                runs[name] = runs.get(name, 0) + 1
                path = HERE / f"{name}{'' if runs[name] == 1 else f'.run{runs[name]}'}.json"
                path.write_text(history.to_json(), encoding="utf-8")
                saved.append(path)
    return saved


def main() -> None:
    suffix = sys.argv[1] if len(sys.argv) > 1 else "turn-steps"
    pipes = sys.argv[2:] or ["looper", "asked"]
    with dp.ops.DevServer(headless=True) as server:
        for path in asyncio.run(record(server.address, suffix, pipes)):
            print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
