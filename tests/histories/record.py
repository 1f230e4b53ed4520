"""Record the histories the replay test keeps: ``python -m tests.histories.record [RUN_ID]``.

Runs the example pipeline (YAML spelling, offline model) on a fresh dev server and saves the history
of the run and of its child workflow as JSON beside this script, named after the run id. Never
re-record an existing one: a history that no longer replays means the workflow code changed
incompatibly. When the workflow code changes on purpose (behind ``workflow.patched``), record a new
run id too, so both the old and the new path stay checked.
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
ARTICLE = "The council approved the new bridge on Monday. It will cost 40 million dollars."
RUN_ID = "brief-recorded"


async def record(address: str, run_id: str) -> list[Path]:
    sys.path.insert(0, str(ROOT / "examples"))
    pipeline = dp.load(ROOT / "examples" / "brief.yaml")
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue="record"):
        await dp.run(
            client, pipeline, "brief", {"article": ARTICLE}, run_id=run_id, task_queue="record"
        )
    return await save_histories(client, run_id)


async def save_histories(client: dp.Client, run_id: str) -> list[Path]:
    """Save the histories of run ``run_id`` and its child runs beside this script, each named
    after its workflow id."""
    saved = []
    for history in await dp.ops.fetch_histories(client, run_id=run_id):
        path = HERE / f"{history.workflow_id.replace('/', '__')}.json"
        path.write_text(history.to_json(), encoding="utf-8")
        saved.append(path)
    return saved


def main() -> None:
    run_id = sys.argv[1] if len(sys.argv) > 1 else RUN_ID
    with dp.ops.DevServer(headless=True) as server:
        for path in asyncio.run(record(server.address, run_id)):
            print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
