"""`durapipe dev`: the real dev server on chosen ports, with a db file, stopped cleanly by a signal."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from temporalio.client import Client

from durapipe._dev import free_port
from tests.cli.test_cli import cli_env, durapipe_command


async def test_dev_serves_on_the_given_ports_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    process = subprocess.Popen(  # noqa: ASYNC220 -- the test drives a real server process
        durapipe_command(
            "dev",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--db-file",
            str(tmp_path / "t.db"),
        ),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=cli_env(),
    )
    try:
        deadline = time.monotonic() + 90
        while "press Ctrl-C to stop" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert f"Temporal UI: http://127.0.0.1:{ui_port}" in log.read_text()
        client = await Client.connect(f"127.0.0.1:{port}")
        assert await client.count_workflows() is not None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert (tmp_path / "t.db").exists()  # runs would survive a restart with the same file
    probe = subprocess.run(  # noqa: ASYNC221
        ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"]
    )
    assert probe.returncode != 0  # the server process it started is gone too
