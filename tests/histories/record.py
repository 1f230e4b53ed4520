"""Record the histories the replay test keeps: ``python -m tests.histories.record``.

Runs the example pipeline (YAML spelling, offline model) on a fresh dev server and saves the history
of the run and of its child workflow as JSON beside this script. Re-record only on purpose: a
history that no longer replays means the workflow code changed incompatibly.
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


async def record(address: str) -> list[Path]:
    sys.path.insert(0, str(ROOT / "examples"))
    pipeline = dp.load(ROOT / "examples" / "brief.yaml")
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue="record"):
        await dp.run(
            client, pipeline, "brief", {"article": ARTICLE}, run_id=RUN_ID, task_queue="record"
        )
    saved = []
    for history in await dp.fetch_histories(client, run_id=RUN_ID):
        path = HERE / f"{history.workflow_id.replace('/', '__')}.json"
        path.write_text(history.to_json(), encoding="utf-8")
        saved.append(path)
    return saved


def main() -> None:
    with dp.DevServer(headless=True) as server:
        for path in asyncio.run(record(server.address)):
            print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
