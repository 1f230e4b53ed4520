"""Hostile or broken pipeline files end in one sentence, in bounded time, never a traceback."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.adapters._yaml_guard import MAX_FILE_BYTES
from tests.support import cli_env, durapipe_command

LLM = "    kind: llm\n    inputs: {a: text}\n    prompt: '{{ a }}'\n"
ALIAS_BOMB = (
    "bomb:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    + "pipes:\n  p:\n"
    + LLM
    + "    description: *a8\n"
)


def _problems(text: str) -> list[str]:
    # The work it took, in this process's CPU time: the wall clock of a machine busy with other
    # processes (the suite runs in several) measures the machine (5.2 s seen at load 16).
    started = time.process_time()
    with pytest.raises(dp.PipelineError) as raised:
        dp.validate(dp.load_yaml(text, source="hostile.yaml"))
    assert time.process_time() - started < 5
    return [str(p) for p in raised.value.problems]


def test_a_key_written_twice_is_refused_naming_both_lines() -> None:
    text = f"pipes:\n  p:\n{LLM}  p:\n{LLM.replace('{{ a }}', 'second {{ a }}')}"
    assert _problems(text) == [
        "hostile.yaml:6: YAML: key 'p' appears twice in one mapping (first on line 2); "
        "YAML would keep only the last"
    ]


def test_an_alias_bomb_is_refused_in_one_sentence() -> None:
    (problem,) = _problems(ALIAS_BOMB)
    assert "expands to more than 500000 values" in problem


def test_deep_nesting_is_refused_in_one_sentence() -> None:
    (problem,) = _problems("pipes:\n  p:\n" + LLM + "    description: " + "[" * 200 + "]" * 200)
    assert "nested more than 64 levels deep" in problem


def test_controllers_nested_thousands_deep_are_refused_in_one_sentence() -> None:
    chain = "".join(
        f"  p{i}:\n    kind: sequence\n    inputs: {{a: text}}\n"
        f"    steps: [{{pipe: p{i + 1}, result: r}}]\n    output: r\n"
        for i in range(3000)
    )
    (problem,) = _problems(f"pipes:\n{chain}  p3000:\n{LLM}")
    assert "pipes call each other more than 50 levels deep" in problem


def test_a_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as file:
        file.write("pipes:\n  p:\n" + LLM + "    description: |\n")
        line = "      " + "x" * 994 + "\n"
        for _ in range(20 * 1024):  # 20 MB
            file.write(line)
    started = time.perf_counter()
    done = subprocess.run(
        durapipe_command("validate", str(big)),
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert time.perf_counter() - started < 30  # a CLI start, not minutes of parsing
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"a pipeline file may hold at most {MAX_FILE_BYTES}" in done.stderr
