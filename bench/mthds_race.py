"""``make bench-mthds``: the MTHDS peer race, durapipe against Pipelex on the same bundles.

One fake OpenAI-compatible provider answers instantly; the same `.mthds` bundles (bench/mthds/) run
on Pipelex in-process (in the bench's own venv, `bench/pipelex_side.py`), on durapipe ``--local``
and on durapipe over Temporal (a dev server and a worker started here). The outputs must agree; the
figures are milliseconds per step (an LLM call with its runtime's bookkeeping) and their ratios to
Pipelex in-process. Medians of repeated runs, after one warm-up run each.

    python -m bench.mthds_race --pipelex-python .venv-bench/bin/python [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import dev_server, figure, note

HERE = Path(__file__).resolve().parent
BUNDLES = {"ask": (HERE / "mthds" / "ask.mthds", 1), "chain": (HERE / "mthds" / "chain.mthds", 10)}
MODEL = "gpt-4o-mini"
QUESTION = "Why is the sky blue?"


def _pipelex(python: str, base_url: str, repeats: int) -> dict[str, dict[str, object]]:
    """Pipelex's outputs and run times, from its side script in its own venv."""
    out = Path(tempfile.mkdtemp(prefix="race-")) / "pipelex.jsonl"
    args = [python, str(HERE / "pipelex_side.py"), "--repeats", str(repeats), "--out", str(out)]
    for name, (path, _) in BUNDLES.items():
        args += ["--bundle", f"{path}:{name}"]
    env = {**os.environ, "FAKE_BASE_URL": base_url, "DO_NOT_TRACK": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"the Pipelex side failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return {line["bundle"].rpartition(":")[2]: line for line in lines}


async def _durapipe(repeats: int, address: str | None) -> dict[str, dict[str, object]]:
    """durapipe's outputs and run times, in-process (``--local``) and on Temporal."""
    import durapipe as dp
    from durapipe.adapters.mthds import ModelDeck, load_mthds

    # The bundles name the model by its handle, as they do for Pipelex; the deck maps it.
    deck = ModelDeck(handles={MODEL: f"openai/{MODEL}"})
    pipelines = {name: load_mthds(path, deck=deck) for name, (path, _) in BUNDLES.items()}
    results: dict[str, dict[str, object]] = {}
    for name, pipeline in pipelines.items():
        seconds, output = [], None
        for attempt in range(repeats + 1):
            began = time.perf_counter()
            result = await dp.run_local(pipeline, name, {"question": QUESTION})
            if attempt:
                seconds.append(time.perf_counter() - began)
            output = result.output
        results[f"local:{name}"] = {"output": output, "seconds": seconds}
    async with dev_server(address) as target:
        client = await dp.connect(target, checkpoints="env")
        queue = f"race-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=queue):
            for name, pipeline in pipelines.items():
                seconds, output = [], None
                for attempt in range(max(3, repeats // 4) + 1):
                    began = time.perf_counter()
                    result = await dp.run(
                        client, pipeline, name, {"question": QUESTION}, task_queue=queue
                    )
                    if attempt:
                        seconds.append(time.perf_counter() - began)
                    output = result.output
                results[f"temporal:{name}"] = {"output": output, "seconds": seconds}
    return results


def main() -> None:
    """Run the race and print its figures, one ``name = value`` per line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelex-python", required=True, help="python of the bench venv")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--address", help="a running Temporal server (default: start one)")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault(
        "DURAPIPE_CHECKPOINTS", str(Path(tempfile.mkdtemp(prefix="race-")) / "checkpoints.sqlite")
    )
    from durapipe.testing import FakeProvider

    with FakeProvider() as fake:
        # litellm's OpenAI provider reads the endpoint from the environment: the same fake for both.
        os.environ["OPENAI_API_BASE"] = fake.base_url
        os.environ["OPENAI_API_KEY"] = "sk-fake"
        pipelex = _pipelex(args.pipelex_python, fake.base_url, args.repeats)
        durapipe_runs = asyncio.run(_durapipe(args.repeats, args.address))
    agree = True
    for name, (_, steps) in BUNDLES.items():
        expected = pipelex[name]["output"]
        for mode in ("local", "temporal"):
            got = durapipe_runs[f"{mode}:{name}"]["output"]
            same = got == expected or {"text": got} == expected
            agree &= same
            if not same:
                note(f"{mode} {name}: durapipe gave {got!r}, Pipelex {expected!r}")
        base = statistics.median(pipelex[name]["seconds"]) * 1000 / steps  # type: ignore[arg-type]
        figure(f"pipelex_{name}_ms_per_step", base)
        for mode in ("local", "temporal"):
            ms = statistics.median(durapipe_runs[f"{mode}:{name}"]["seconds"]) * 1000 / steps  # type: ignore[arg-type]
            figure(f"durapipe_{mode}_{name}_ms_per_step", ms)
            figure(f"durapipe_{mode}_{name}_ratio_to_pipelex", ms / base)
    figure("pipelex_boot_s", float(pipelex["ask"]["boot_s"]))  # type: ignore[arg-type]
    figure("outputs_agree", "yes" if agree else "no")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
