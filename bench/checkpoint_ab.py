"""In-process A/B of the checkpoint path against an earlier commit's: key, wrapper, SQLite round trip.

The earlier commit's ``durapipe/stores/_checkpoints.py``, ``_answers.py`` and ``_held_sqlite.py``
(the event loop's SQLite connection; ``git show``) are loaded beside this checkout's, and each piece runs both ways, alternating round by round
(`bench.activity_ab.compare`), so a busy machine slows both alike:

    python -m bench.checkpoint_ab --base 01d7702 [--rounds 9] [--calls 5000]

- ``key``: `checkpoint_key` of a batch1000 item (the bench's llm call: no structures, no
  settings), of a structured llm call with the same structure objects every call (a local run),
  with structures decoded anew every call (a worker), of an agent turn and of a tool call;
- ``checkpointed``: the wrapper around a leaf's computation with a store that does nothing (the
  wrapper's own cost, over an event loop round trip of about 10 us), and with a SQLite store (a
  read that misses, then a write; each side with its own commit's store class, on a file of its
  own, its background log checkpoints included).

Each figure is process CPU microseconds per call. In a worker these pieces cost several times what
a loop shows (a big heap, other work between two leaves: their code and data are out of the CPU's
caches each time); ``--cold`` times the keys with a walk through ~30 MB of other objects before
each call (not timed), each call's thread CPU time read around it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from bench.activity_ab import compare, report

ROOT = Path(__file__).resolve().parent.parent


def _module_at(commit: str, path: str, name: str, folder: Path) -> ModuleType:
    """The module ``path`` as it was at ``commit``, loaded under ``name``."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _calls() -> dict[str, tuple[list[Any], list[Any]]]:
    """The calls each key variant cycles through, with their messages."""
    from durapipe.activities._llm import messages_for
    from durapipe.runtime import AgentTurnCall, LlmCall, ToolCall
    from durapipe.spec import AgentPipe, LlmPipe, ToolPipe
    from durapipe.spec._types import StructureSpec

    pipe = LlmPipe(
        model="durapipe/offline", prompt="{{ question }}", inputs={"question": "text"}, timeout=120
    )
    run = f"batch1000-{uuid.uuid4().hex}"
    batch = [
        LlmCall(
            run_id=run,
            scope=uuid.uuid4().hex,
            path=f"batch1000[{i}]",
            pipe_name="ask",
            inputs={"question": f"q{i}"},
            pipe=pipe,
        )
        for i in range(1000)
    ]
    claim = StructureSpec.model_validate(
        {"description": "A claim", "fields": {"text": "text", "score": "number"}}
    )
    source = StructureSpec.model_validate({"fields": {"url": "text", "claims": "list[Claim]"}})
    structured = LlmCall(
        run_id=run,
        scope="s",
        path="ask",
        pipe_name="ask",
        pipe=LlmPipe(model="openai/x", prompt="{{ q }}", output="Source", inputs={"q": "text"}),
        inputs={"q": "a question"},
        structures={"Claim": claim, "Source": source},
    )
    decoded = [LlmCall.model_validate_json(structured.model_dump_json()) for _ in range(1000)]
    agent = AgentTurnCall(
        run_id=run,
        scope="s",
        path="agent",
        pipe_name="agent",
        pipe=AgentPipe(model="openai/x", prompt="plan", tools=["score"], output="Claim"),
        structures={"Claim": claim},
        turn=2,
        messages=[{"role": "user", "content": "Plan the trip."}],
        tools=[{"type": "function", "function": {"name": "score"}}],
    )
    tool = ToolCall(
        run_id=run,
        scope="s",
        path="t",
        pipe_name="score",
        pipe=ToolPipe(function="tools:score", output="Claim", inputs={"claim": "Claim"}),
        inputs={"claim": {"text": "x", "score": 0.5}},
        structures={"Claim": claim},
    )
    return {
        "batch1000 llm": (batch, [messages_for(c) for c in batch]),
        "structured llm, same objects": ([structured], [messages_for(structured)]),
        "structured llm, decoded per call": (decoded, [messages_for(structured)] * len(decoded)),
        "agent turn": ([agent], [None]),
        "tool": ([tool], [None]),
    }


def compare_cold(
    variants: dict[str, Callable[[], object]], *, rounds: int, calls: int
) -> dict[str, list[float]]:
    """Like `compare`, with the caches cold: before each call a walk through other objects (not
    timed); each call's own thread CPU time is summed."""
    other = [[random.random() for _ in range(8)] for _ in range(400_000)]

    def walk() -> float:
        return sum(row[0] for row in other[::7])

    for run in variants.values():
        run()
    timings: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for n in range(rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            spent = 0
            for _ in range(calls):
                walk()
                start = time.thread_time_ns()
                variants[name]()
                spent += time.thread_time_ns() - start
            timings[name].append(spent / calls / 1000)
    return timings


def _keyed(key: Callable[..., str], calls: list[Any], messages: list[Any]) -> Callable[[], object]:
    turn = itertools.cycle(range(len(calls)))

    def run() -> object:
        i = next(turn)
        return key(calls[i], messages[i], namespace="default")

    return run


def _wrapped(checkpointed: Callable[..., Any], store: Any) -> Callable[[], object]:
    from durapipe.runtime import LlmCall
    from durapipe.runtime._calls import LeafResult, Usage
    from durapipe.spec import LlmPipe

    call = LlmCall(run_id="r", path="a", pipe_name="a", pipe=LlmPipe(prompt="hi"))
    result = LeafResult(
        output="an answer", usage=Usage(input_tokens=12, output_tokens=30), model="m"
    )
    loop = asyncio.new_event_loop()
    keys = itertools.count()

    async def compute() -> LeafResult:
        return result

    def run() -> object:
        key = f"{uuid.uuid4().hex}-{next(keys)}"
        return loop.run_until_complete(checkpointed(store, call, key, 1, compute))

    return run


class _NoStore:
    """A store that keeps nothing and answers at once: the wrapper's own cost."""

    def get(self, key: str) -> None:
        return None

    def put(self, key: str, result: object) -> bool:
        return True

    def get_nowait(self, key: str) -> None:
        return None

    def put_nowait(self, key: str, result: object) -> bool:
        return True

    def get_answer(self, key: str) -> None:
        return None

    def put_answer(self, key: str, answer: bytes) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    """A/B each piece of the checkpoint path against ``--base``'s and print us per call."""
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_ab", description=__doc__)
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5000, help="calls per variant per round")
    parser.add_argument("--cold", action="store_true", help="the keys only, caches cold")
    args = parser.parse_args(argv)
    from durapipe.stores import SqliteCheckpoints
    from durapipe.stores import _checkpoints as new

    with tempfile.TemporaryDirectory() as folder:
        old = _module_at(
            args.base, "durapipe/stores/_checkpoints.py", "base_checkpoints", Path(folder)
        )
        old_answers = _module_at(
            args.base, "durapipe/stores/_answers.py", "base_answers", Path(folder)
        )
        old.__dict__["keeping_answers"] = old_answers.keeping_answers  # the base's, whole
        old_held = _module_at(
            args.base, "durapipe/stores/_held_sqlite.py", "base_held_sqlite", Path(folder)
        )
        old.__dict__["held_connection"] = old_held.held_connection
        for name, (calls, messages) in _calls().items():
            print(f"# checkpoint_key, {name}" + (", caches cold" if args.cold else ""))
            variants = {
                "old": _keyed(old.checkpoint_key, calls, messages),
                "new": _keyed(new.checkpoint_key, calls, messages),
            }
            if args.cold:
                report(compare_cold(variants, rounds=args.rounds, calls=min(args.calls, 300)))
            else:
                report(compare(variants, rounds=args.rounds, calls=args.calls))
        if args.cold:
            return
        print("# checkpointed, a store that does nothing")
        variants = {
            "old": _wrapped(old.checkpointed, _NoStore()),
            "new": _wrapped(new.checkpointed, _NoStore()),
        }
        report(compare(variants, rounds=args.rounds, calls=args.calls))
        print("# checkpointed, SQLite: a read that misses, then a write")
        # Each side's own store class on its own file: the store's code is part of the path.
        variants = {
            "old": _wrapped(old.checkpointed, old.SqliteCheckpoints(Path(folder) / "old.sqlite")),
            "new": _wrapped(new.checkpointed, SqliteCheckpoints(Path(folder) / "new.sqlite")),
        }
        report(compare(variants, rounds=args.rounds, calls=max(1, args.calls // 2)))
    sys.stdout.flush()  # before the temporary folder goes


if __name__ == "__main__":
    main()
