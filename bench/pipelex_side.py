"""The Pipelex half of the MTHDS peer race; runs in the bench's own venv (pipelex installed there).

Boots Pipelex in-process against the fake provider at ``FAKE_BASE_URL`` (its OpenAI backend pointed
there, chat completions, logging and tracing quiet), runs each bundle ``--repeats`` times after one
warm-up run, and writes one JSON line per bundle to ``--out``: the main output and each run's seconds.

    python bench/pipelex_side.py --bundle ask.mthds:ask --repeats 20 --out race.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def _config_home() -> Path:
    """A copy of Pipelex's kit configuration with only the OpenAI backend, pointed at the fake."""
    import pipelex

    kit = Path(pipelex.__file__).parent / "kit" / "configs"
    home = Path(tempfile.mkdtemp(prefix="pipelex-home-"))
    shutil.copytree(kit, home, dirs_exist_ok=True)
    backends = home / "inference" / "backends.toml"
    text = backends.read_text().replace("enabled = true", "enabled = false")
    text = text.replace(
        '[openai]\ndisplay_name = "OpenAI"\nenabled = false\napi_key = "${OPENAI_API_KEY}"',
        '[openai]\ndisplay_name = "OpenAI"\nenabled = true\napi_key = "sk-fake"\n'
        'endpoint = "${FAKE_BASE_URL}"',
    )
    backends.write_text(text)
    # The fake serves Chat Completions (as durapipe's litellm calls use), not the Responses API.
    openai = home / "inference" / "backends" / "openai.toml"
    openai.write_text(
        openai.read_text()
        .replace('sdk = "openai_responses"', 'sdk = "openai"')
        .replace("instructor/openai_responses_tools", "instructor/openai_tools")
    )
    # Quiet, as durapipe's in-process runner is: no per-call panels, cost lines or trace files.
    config = home / "pipelex.toml"
    config.write_text(
        config.read_text()
        .replace('default_log_level = "INFO"', 'default_log_level = "WARNING"')
        .replace('pipelex = "INFO"', 'pipelex = "WARNING"')
        .replace("is_log_costs_to_console = true", "is_log_costs_to_console = false")
        .replace("[runtime.tracing]\nis_enabled = true", "[runtime.tracing]\nis_enabled = false")
    )
    return home


async def _race(bundles: list[str], repeats: int, question: str, out: Path) -> None:
    os.environ["PIPELEX_HOME"] = str(_config_home())
    # No usage statistics: the bench machine has no internet, and they are not the runtime's work.
    os.environ["DO_NOT_TRACK"] = "1"
    started = time.perf_counter()
    from pipelex.pipelex import Pipelex
    from pipelex.pipeline.runner import PipelexMTHDSProtocol

    Pipelex.make()
    boot = time.perf_counter() - started
    runner = PipelexMTHDSProtocol()
    for spec in bundles:
        path, _, pipe = spec.rpartition(":")
        text = Path(path).read_text()
        seconds: list[float] = []
        output = None
        for attempt in range(repeats + 1):  # the first run warms up
            began = time.perf_counter()
            result = await runner.execute(
                pipe_code=pipe, mthds_contents=[text], inputs={"question": question}
            )
            if attempt:
                seconds.append(time.perf_counter() - began)
            output = result.pipe_output.working_memory.get_main_stuff().content.model_dump()
        line = {"bundle": spec, "boot_s": boot, "output": output, "seconds": seconds}
        with out.open("a") as sink:  # a file: Pipelex prints each run's output panel on stdout
            sink.write(json.dumps(line) + "\n")


def main() -> None:
    """Parse the arguments and run the race's Pipelex half."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", action="append", required=True, help="PATH:PIPE")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--question", default="Why is the sky blue?")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per bundle")
    args = parser.parse_args()
    asyncio.run(_race(args.bundle, args.repeats, args.question, args.out))


if __name__ == "__main__":
    main()
