"""Structures nested within each other deeper than pydantic builds them: a client's chain of
3,000 structures (each with a field of the next). Every walk of the structures is iterative, and
the chain is one problem naming the structure: in `durapipe validate` and `run`, in the Python
API, in a raw run's workflow and in `durapipe serve`'s answer, never a RecursionError."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.spec._types import (
    MAX_NESTING,
    StructureSpec,
    nesting_depth,
    structures_used,
    type_problems,
)
from tests.serve.conftest import TOKEN, serving
from tests.support import cli_env, durapipe_command, patch_markers, raw_run_fails

DEEP = "structure 'S0' nests 3,000 levels deep"


def chain(levels: int) -> dict[str, StructureSpec]:
    """``S0`` .. ``S<levels - 1>``, each with a field ``next`` of the next (the last: text)."""
    return {
        f"S{i}": StructureSpec(fields={"next": f"S{i + 1}" if i + 1 < levels else "text"})
        for i in range(levels)
    }


def chained_yaml(levels: int) -> str:
    """A pipeline file whose one llm pipe answers a chain of ``levels`` structures."""
    declared = {name: spec.model_dump() for name, spec in chain(levels).items()}
    ask = {"kind": "llm", "inputs": {"topic": "text"}, "prompt": "{{ topic }}", "output": "S0"}
    return json.dumps({"version": 1, "structures": declared, "pipes": {"ask": {**ask}}})


def test_a_chain_of_structures_is_walked_without_recursion() -> None:
    structures = chain(3000)
    assert len(structures_used("S0", structures)) == 3000
    assert nesting_depth("list[S0]", structures) == 3001
    (problem,) = type_problems("S0", structures)
    assert problem.startswith(DEEP)
    # The deepest a worker reads is fine; one level more is refused.
    assert type_problems("S0", chain(MAX_NESTING)) == []
    assert "nests 33 levels deep" in type_problems("list[S0]", chain(MAX_NESTING))[0]


def test_the_python_api_refuses_the_chain_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(chained_yaml(3000))
    for checked in (lambda: dp.load(path), lambda: dp.validate(dp.load_yaml(chained_yaml(3000)))):
        with pytest.raises(dp.PipelineError, match="pipe 'ask', field 'output': " + DEEP):
            checked()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_cli_refuses_the_chain_in_one_sentence(command: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(chained_yaml(3000))
    args = [str(path)] if command == "validate" else ["ask", "--file", str(path), "--local"]
    done = subprocess.run(
        durapipe_command(command, *args, *(["-i", "topic=x"] if command == "run" else [])),
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert DEEP in done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr


async def test_a_raw_run_of_the_chain_fails_at_once_naming_the_structure(
    temporal_address: str, task_queue: str
) -> None:
    # A Pipeline built in Python is not checked until its run starts: its workflow says it.
    pipeline = dp.Pipeline.model_validate(json.loads(chained_yaml(3000)))
    data = pipe_run(pipeline, "ask", {"topic": "x"}).model_dump(mode="json")
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue):
        handle, failure = await raw_run_fails(client, data, task_queue)
    assert failure.cause_type == "durapipe.InvalidSpec"
    assert f"pipe 'ask', field 'output': {DEEP}" in failure.cause
    # Runs recorded before the bound went on: only a run it stops asks (see NESTING_PATCH).
    history = await handle.fetch_history()
    assert patch_markers(list(history.events)) == ["durapipe.nesting-bound"]


@pytest.mark.parametrize("route", ["validate", "start"])
async def test_serve_answers_the_chain_with_a_problem(
    temporal_address: str, task_queue: str, route: str
) -> None:
    client = await dp.connect(temporal_address, checkpoints=None)
    body = {"pipe_code": "ask", "files": {"method.yaml": chained_yaml(3000)}, "inputs": {}}
    async with serving(client, task_queue) as port, httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"http://127.0.0.1:{port}/v1/{route}",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code in ((200,) if route == "validate" else (400, 422)), answer.text
    assert DEEP in answer.text
    if route == "validate":
        assert answer.json()["is_valid"] is False
