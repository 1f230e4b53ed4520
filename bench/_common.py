"""What the bench scripts share: a dev server, subprocesses stopped by pid, figures as lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
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
def process(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (output to ``log``) until the block ends, then SIGTERM it by its own pid."""
    with log.open("ab") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env)
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


def wait_ready(
    child: subprocess.Popen[bytes],
    log: Path,
    ready: str,
    timeout: float | None = None,
    what: str | None = None,
) -> None:
    """Wait until ``ready`` shows in ``log``, for as long as ``child`` runs (or ``timeout``).

    A loaded host can take minutes to start a worker (16-37 s each at load 10-15), so by default
    there is no deadline: the wait ends when the line shows or the process dies. One comment line
    says what it waits for; another each minute says it still does.

    Raises:
        SystemExit: one sentence (no traceback) when the process ended first, naming it, its exit
            code, its log and the log's last line; or when ``timeout`` passed.
    """
    name = what or f"{log.stem} (pid {child.pid})"
    note(f"waiting for {name} to print {ready!r} in {log}")
    began = time.monotonic()
    next_note = began + 60
    while ready not in log.read_text(errors="replace"):
        code = child.poll()
        if code is not None:
            raise SystemExit(
                f"{name} exited with code {code} before it printed {ready!r}; "
                f"its log {log} ends: {_last_line(log)}"
            )
        now = time.monotonic()
        if timeout is not None and now - began > timeout:
            raise SystemExit(
                f"{name} did not print {ready!r} within {timeout:.0f} s; "
                f"its log {log} ends: {_last_line(log)}"
            )
        if now >= next_note:
            note(f"still waiting for {name} after {now - began:.0f} s")
            next_note += 60
        time.sleep(0.05)
    note(f"{name} ready after {time.monotonic() - began:.1f} s")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing)"


def durapipe_cli(*args: str) -> list[str]:
    """The ``durapipe`` command line of this Python."""
    return [sys.executable, "-m", "durapipe", *args]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def cpu_when_quiet(pid: int, *, quiet_s: float = 0.1, at_most_s: float = 3.0) -> float:
    """`cpu_seconds` of ``pid`` once it has stopped using CPU (no tick over ``quiet_s``), or after
    ``at_most_s``: what a run leaves running in its worker after it returned (logging tasks, cache
    evictions, collections) is that run's cost, not the next run's measured on the same worker,
    nor lost when the next run measured is another worker's."""
    deadline = time.monotonic() + at_most_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
    return last
