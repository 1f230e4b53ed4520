"""What the bench scripts share: a dev server, subprocesses stopped by pid, figures as lines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from temporalio.testing import WorkflowEnvironment

from durapipe.ops._dev import search_attribute_flags, temporal_cli


def figure(name: str, value: float | int | str) -> None:
    """Print one ``name = value`` line (what scripts parse)."""
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    print(f"{name} = {value}", flush=True)


def note(text: str) -> None:
    """Print a comment line scripts skip."""
    print(f"# {text}", flush=True)


@contextlib.asynccontextmanager
async def dev_server(address: str | None) -> AsyncIterator[str]:
    """``address`` if given, else a fresh dev server (the real one) for this bench, stopped after."""
    if address:
        yield address
        return
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        # Workers refuse a namespace without durapipe's search attributes.
        dev_server_extra_args=search_attribute_flags(),
    )
    try:
        yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


@contextlib.contextmanager
def process(args: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (output to ``log``) until the block ends, then SIGTERM it by its own pid."""
    with log.open("ab") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_ready(child: subprocess.Popen[bytes], log: Path, ready: str, timeout: float = 120) -> None:
    """Wait until ``ready`` shows in ``log``.

    Raises:
        RuntimeError: the process ended or ``timeout`` passed first.
    """
    deadline = time.monotonic() + timeout
    while ready not in log.read_text(errors="replace"):
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.args!r} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def durapipe_cli(*args: str) -> list[str]:
    """The ``durapipe`` command line of this Python."""
    return [sys.executable, "-m", "durapipe", *args]
