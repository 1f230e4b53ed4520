"""Record the histories of a run's shares of its free steps the replay test keeps:
``DURAPIPE_MAX_RUN_STEPS=100 python -m tests.histories.record_shares SUFFIX``.

Runs ``wide`` (`tests.support.WIDE_BESIDE_FIXED`), a parallel of a batch over 30 numbers beside
three fixed branches of two steps each (the run counts 10 steps when it starts), on a fresh dev
server, and saves the history of the run and of its four branches' runs as JSON beside this
script, named ``wide-SUFFIX``. Recorded
with ``DURAPIPE_MAX_RUN_STEPS=100``: ``even-split`` by the code before patch
``durapipe.exact-static-shares``, where the batch was lent 23 of the 90 free steps and refused its
30 items; ``exact-shares`` by the code after, where it is lent all 90. With ``two`` after the
suffix it runs ``two`` instead, a parallel of two batches over lists it holds (150 and 20 numbers,
`tests.support.TWO_LISTS`): ``known-list-shares`` was recorded with
``DURAPIPE_MAX_RUN_STEPS=200`` by the code after patch ``durapipe.known-list-shares``, where each
batch is lent what its items need (before it, each was lent 99 and the larger refused). Never
re-record an existing one (see `tests.histories.record`).
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


async def record(address: str, suffix: str, pipe: str) -> list[Path]:
    sys.path.insert(0, str(ROOT))
    from tests.histories.record import save_histories
    from tests.support import EACH_SQUARE, SQUARE_TOOL, TWO_INPUTS, TWO_LISTS, WIDE_BESIDE_FIXED

    pipes = "pipes:" + EACH_SQUARE + SQUARE_TOOL + WIDE_BESIDE_FIXED
    inputs: dict[str, object] = {"numbers": list(range(30)), "n": 3}
    if pipe == "two":
        pipes, inputs = TWO_LISTS, dict(TWO_INPUTS)
    pipeline = dp.load_yaml(pipes)
    client = await dp.connect(address, pipeline=pipeline)
    run_id = f"{pipe}-{suffix}"
    async with dp.build_worker(client, task_queue="record"):
        try:
            await dp.run(client, pipeline, pipe, inputs, run_id=run_id, task_queue="record")
        except dp.StepFailed as failed:  # a run its code refused is a history too
            print(f"{run_id}: {failed}")
    return await save_histories(client, run_id)


def main() -> None:
    with dp.ops.DevServer(headless=True) as server:
        pipe = sys.argv[2] if len(sys.argv) > 2 else "wide"
        for path in asyncio.run(record(server.address, sys.argv[1], pipe)):
            print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
