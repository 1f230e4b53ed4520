"""Record the histories of cancelled runs the replay test keeps:
``python -m tests.histories.record_cancelled SUFFIX [PIPE ...]``.

Runs ``judge`` (an llm step whose structured answer the fake provider's first reply misses, paid
for, and whose re-ask hangs) on a fresh dev server and a fake OpenAI-compatible provider billing
$0.01 an output token, cancels it once the re-ask is in flight, and saves the history of the run
(and of its child runs, for a nested pipe) as JSON beside this script, named ``PIPE-SUFFIX``.
``cancelled-spend`` was recorded by the code after patch ``durapipe.cancelled-spend`` (the call
fails with type ``durapipe.Cancelled`` and its spend, and the run ends as cancelled);
``cancelled-run-spend outer`` (the same call in a nested run, ``asked``) after patch
``durapipe.cancelled-run-spend`` (the nested run fails with type ``durapipe.Cancelled`` and its
step records, and its parent counts what they spent and ends as cancelled). Never
re-record an existing one (see `tests.histories.record`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import durapipe as dp
from durapipe.testing import FakeProvider, Hang, Reply

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODEL = "gpt-cancel"
PIPES = f"""
structures:
  Verdict:
    fields: {{ok: boolean}}
pipes:
  judge:
    kind: llm
    model: openai/{MODEL}
    inputs: {{topic: text}}
    prompt: "Judge {{{{ topic }}}}."
    output: Verdict
    settings: {{max_tokens: 100}}
  asked:
    kind: sequence
    inputs: {{topic: text}}
    steps:
      - {{pipe: judge, result: verdict}}
    output: verdict
  outer:
    kind: sequence
    inputs: {{topic: text}}
    steps:
      - {{pipe: asked, result: verdict}}
    output: verdict
"""


async def record(address: str, fake: FakeProvider, suffix: str, pipe: str) -> list[Path]:
    sys.path.insert(0, str(ROOT))
    from tests.histories.record import save_histories

    fake.script(MODEL, [Reply(content="this is not json", completion_tokens=100), Hang(120)])
    since = len(fake.calls)
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(address, pipeline=pipeline)
    run_id = f"{pipe}-{suffix}"
    async with dp.build_worker(client, task_queue="record"):
        handle = await dp.start(
            client, pipeline, pipe, {"topic": "x"}, run_id=run_id, task_queue="record"
        )
        await fake.wait_until_async(lambda calls: len(calls) == since + 2, timeout=60)
        await handle.cancel()
        try:
            await handle.result()
        except dp.RunCancelled as cancelled:
            print(f"{run_id}: {cancelled}")
    return await save_histories(client, run_id)


async def record_all(address: str, suffix: str, pipes: list[str]) -> list[Path]:
    saved = []
    with FakeProvider(prices={MODEL: (1e-5, 0.01)}) as fake:
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        os.environ["OPENAI_API_KEY"] = "sk-fake"
        fake.register_prices_with_litellm()
        for pipe in pipes:
            saved += await record(address, fake, suffix, pipe)
    return saved


def main() -> None:
    suffix = sys.argv[1] if len(sys.argv) > 1 else "cancelled-spend"
    pipes = sys.argv[2:] or ["judge"]
    with dp.ops.DevServer(headless=True) as server:
        for path in asyncio.run(record_all(server.address, suffix, pipes)):
            print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
