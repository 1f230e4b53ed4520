"""`durapipe run --json` keeps stdout for the run's output, even while the server is unreachable."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import durapipe as dp
from durapipe.testing import FakeProvider, Hang
from tests.chain import expected_output, write_chain
from tests.support import cli_env


async def test_json_output_stays_alone_on_stdout_across_a_server_restart(
    task_queue: str, tmp_path: Path
) -> None:
    server = dp.ops.DevServer(headless=True, db_file=str(tmp_path / "temporal.db"))
    await asyncio.to_thread(server.start)
    try:
        async with FakeProvider() as fake:
            fake.set_default(Hang(1.0))  # the run is mid-way when the server goes away
            file = write_chain(tmp_path / "chain.yaml", fake.base_url, steps=2)
            pipeline = dp.load(file)
            client = await dp.connect(server.address, pipeline=pipeline)
            async with dp.build_worker(client, task_queue=task_queue):
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "durapipe", "run", "chain", "--file", str(file),
                    "--input", "topic=otters", "--json", "--address", server.address,
                    "--task-queue", task_queue,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    env=cli_env(),
                )  # fmt: skip
                await fake.wait_until_async(lambda calls: len(calls) >= 1, timeout=60)
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # same port, same database
                out, err = await asyncio.wait_for(cli.communicate(), timeout=180)
    finally:
        await asyncio.to_thread(server.stop)
    assert cli.returncode == 0, err.decode()
    text = out.decode()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"stdout holds more than the output: {text[:1500]!r}") from None
    assert value == expected_output("otters", steps=2)
