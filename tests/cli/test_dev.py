"""`durapipe dev`: the real dev server on chosen ports, with a db file, stopped cleanly by a signal."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from temporalio.client import Client

import durapipe as dp
from durapipe.cli._progress import ui_line
from durapipe.ops import _dev
from durapipe.ops._dev import free_port
from tests.support import cli_env, durapipe_command


async def test_dev_serves_on_the_given_ports_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    # The note of a server killed without `stop` (a demo --keep server stopped by its pid).
    stale = _dev._record_path(free_port())
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(json.dumps({"ip": "127.0.0.1", "ui_url": None, "pid": 2**22 + 1}))
    log = tmp_path / "dev.log"
    process = subprocess.Popen(
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
        # Runs on it link to its UI, not to the gRPC port + 1000 (what `run` printed before).
        link = ui_line(None, f"localhost:{port}", "default", "r 1")
        assert link == f"Temporal UI: http://127.0.0.1:{ui_port}/namespaces/default/workflows/r%201"
        assert not stale.exists()  # a starting server deletes the notes of gone ones
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    # Stopped, it leaves no note behind: another server on the port gets the default guess.
    assert dp.ops.dev_ui_url(f"127.0.0.1:{port}") == f"http://127.0.0.1:{port + 1000}"
    assert (tmp_path / "t.db").exists()  # runs would survive a restart with the same file
    probe = subprocess.run(
        ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"]
    )
    assert probe.returncode != 0  # the server process it started is gone too


def test_a_taken_port_given_by_the_user_fails_with_the_servers_own_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = dp.ops.DevServer(port=port, headless=True)
        with pytest.raises(dp.ConfigError) as raised:
            server.start()
    assert str(raised.value) == (
        "the Temporal dev server exited at start: Error: can't set frontend port "
        f"{port}: listen tcp 127.0.0.1:{port}: bind: address already in use"
    )
    assert server.process is None


def test_a_port_it_picked_that_another_process_took_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])  # the first pick loses the race; later picks are the OS's
        monkeypatch.setattr(_dev, "free_port", lambda host: next(picks, None) or free_port(host))
        with dp.ops.DevServer(headless=True) as server:
            assert server.port != port
            assert server.process is not None and server.process.poll() is None


def test_dev_refuses_a_port_another_server_already_serves(temporal_address: str) -> None:
    # The session's dev server holds this port: `dev` must not report that server as its own.
    port = temporal_address.rsplit(":", 1)[1]
    taken = subprocess.run(
        durapipe_command("dev", "--port", port, "--headless"),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert taken.returncode == 2, taken.stderr
    assert taken.stderr == (
        f"error: another Temporal server already serves 127.0.0.1:{port}; use it (--address "
        f"127.0.0.1:{port}), stop it, or choose a free port with --port\n"
    )


def test_the_ui_link_of_a_remote_server_is_not_guessed() -> None:
    # `run` printed http://<host>:<port + 1000>/... for any server, a dead link for most.
    assert ui_line(None, "temporal.example.com:7233", "ns", "r") == (
        "Temporal UI: pass --ui-url (or set DURAPIPE_UI_URL) to get a link to this run"
    )
    assert ui_line("https://ui.example.com/", "temporal.example.com:7233", "ns", "r") == (
        "Temporal UI: https://ui.example.com/namespaces/ns/workflows/r"
    )
