"""Mistakes a new user makes, as the `durapipe` command meets them: one sentence naming what to
fix (a variable, an address), exit 2, no traceback, nothing run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durapipe.cli import app
from tests.support import WorkerProcess, cli_env, durapipe_command, run_cli

TOOL_PIPELINE = """\
pipes:
  shout:
    kind: tool
    function: shout_tools:shout
    inputs: {text: text}
    output: text
  read:
    kind: extract
    inputs: {document: document}
    output: text
"""


def _pipeline(tmp_path: Path) -> Path:
    (tmp_path / "shout_tools.py").write_text(
        "def shout(text: str) -> str:\n    return text.upper()\n"
    )
    file = tmp_path / "shout.yaml"
    file.write_text(TOOL_PIPELINE)
    return file


def _not_a_folder(tmp_path: Path) -> Path:
    """A place no store can be made in, even by root: its parent is a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "store"


def test_a_checkpoint_folder_that_cannot_be_made_is_one_sentence(tmp_path: Path) -> None:
    # `--local` and `checkpoints prune` opened the store with a bare mkdir: a 60-line traceback
    # ending in FileNotFoundError (a worker said it in one sentence, from its start-up check).
    where = _not_a_folder(tmp_path) / "checkpoints.sqlite"
    env = {"DURAPIPE_CHECKPOINTS": str(where)}
    local = run_cli(
        "run", "shout", "--file", str(_pipeline(tmp_path)), "--input", "text=hi", "--local",
        env=env,
    )  # fmt: skip
    pruned = run_cli("checkpoints", "prune", env=env)
    for result in (local, pruned):
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"error: DURAPIPE_CHECKPOINTS: cannot write to {where.parent} (Not a directory); "
            "set DURAPIPE_CHECKPOINTS to a writable folder\n"
        )
        assert result.stdout == ""


def test_a_blob_folder_that_cannot_be_made_is_one_sentence(
    tmp_path: Path, temporal_address: str
) -> None:
    # A document input is stored before the run starts: the store's mkdir raised through the CLI.
    where = _not_a_folder(tmp_path)
    document = tmp_path / "note.txt"
    document.write_text("a note")
    pipeline = str(_pipeline(tmp_path))
    args = ["run", "read", "--file", pipeline, "--input", f"document=@{document}"]
    env = {"DURAPIPE_BLOB_DIR": str(where)}
    local = run_cli(*args, "--local", env=env)
    remote = run_cli(*args, "--address", temporal_address, "--id", f"blob-{tmp_path.name}", env=env)
    for result in (local, remote):
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"error: DURAPIPE_BLOB_DIR: cannot write to {where} (Not a directory); "
            "set DURAPIPE_BLOB_DIR to a writable folder\n"
        )
    described = run_cli("describe", f"blob-{tmp_path.name}", "--address", temporal_address)
    assert described.returncode == 1 and "no run" in described.stderr  # nothing was started


@pytest.fixture
def http_port() -> Iterator[int]:
    """A port where an HTTP server answers (as the Temporal Web UI's does), not Temporal's gRPC."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_an_address_where_another_service_answers_is_one_sentence(http_port: int) -> None:
    # The UI's port (8233) given for the frontend's (7233) said the SDK's nested Rust error:
    # "Failed client connect: `get_system_info` call error after connection: Status { code:
    # Unknown, message: "transport error", source: Some(tonic::transport::Error(...)) }".
    result = CliRunner().invoke(app, ["show", "some-run", "--address", f"127.0.0.1:{http_port}"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot reach Temporal at 127.0.0.1:{http_port} (namespace default): something "
        "took the connection but does not answer as a Temporal frontend (gRPC) does: another "
        "service (the Web UI listens on the frontend's port + 1000), or a server that expects "
        "TLS; start a dev server with `durapipe dev`, or check TEMPORAL_ADDRESS and the TLS "
        "settings\n"
    )


def _as_another_user(command: list[str]) -> list[str]:
    """``command`` run as a user without root's right to read any file (as itself if not root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]


def test_an_unreadable_pipeline_file_is_durapipes_sentence() -> None:
    # Typer checked readability first: its usage box ("Invalid value for 'file': path ... is not
    # readable"), while every other problem of the file is durapipe's `error:` sentence.
    folder = Path(tempfile.mkdtemp())  # pytest's tmp_path is in a folder only its user enters
    folder.chmod(0o755)
    file = folder / "brief.yaml"
    file.write_text(TOOL_PIPELINE)
    file.chmod(0)
    for args in (["validate", str(file)], ["run", "shout", "--file", str(file), "--local"]):
        result = subprocess.run(
            _as_another_user(durapipe_command(*args)),
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"error: pipeline file '{file}' cannot be read: permission denied (its mode is "
            "----------); give the user running durapipe read access to it\n"
        )
    shutil.rmtree(folder)


@pytest.mark.parametrize("suffix", [".yaml", ".mthds"])
def test_a_named_pipe_given_as_a_pipeline_file_says_what_it_is(tmp_path: Path, suffix: str) -> None:
    # A FIFO was "does not exist" (.yaml), or a read that waited for a writer forever (.mthds).
    fifo = tmp_path / f"pipes{suffix}"
    os.mkfifo(fifo)
    result = CliRunner().invoke(app, ["validate", str(fifo)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: pipeline file '{fifo}' is a named pipe (FIFO), not a file: give a pipeline file "
        "(.yaml, .yml, .py or .mthds) or an MTHDS package folder\n"
    )


def test_a_run_schedule_or_blob_that_does_not_exist_exits_1_alike(
    tmp_path: Path, temporal_address: str
) -> None:
    # A missing run exited 1 and a missing schedule 2 (and a missing blob 2): one kind of mistake,
    # two codes. README: 1 when what a command names cannot be acted on, 2 for a wrong request.
    address = ["--address", temporal_address]
    commands = (
        ["show", "no-such-run"],
        ["cancel", "no-such-run"],
        ["schedule", "pause", "no-such-schedule"],
        ["schedule", "trigger", "no-such-schedule"],
        ["schedule", "delete", "no-such-schedule"],
    )
    for args in commands:
        result = CliRunner().invoke(app, [*args, *address])
        assert result.exit_code == 1, (args, result.stderr)
        assert result.stderr.startswith("error: no ") and result.stderr.count("\n") == 1, args
    schedule = CliRunner().invoke(app, ["schedule", "delete", "no-such-schedule", *address])
    assert schedule.stderr == (
        "error: no schedule 'no-such-schedule'; `durapipe schedule list` lists them\n"
    )
    blob = run_cli(
        "blob", "get", "sha256:" + "0" * 64, str(tmp_path / "out"),
        env={"DURAPIPE_BLOB_DIR": str(tmp_path / "blobs")},
    )  # fmt: skip
    assert blob.returncode == 1, blob.stderr
    assert blob.stderr.startswith("error: blob sha256:000") and blob.stderr.count("\n") == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where something takes the connection and never answers (a hung server)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def hold() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


@pytest.mark.parametrize("words", [["show", "some-run"], ["serve", "--port", "0"]])
def test_a_server_that_never_answers_is_said_while_the_connect_waits(
    silent_port: int, words: list[str]
) -> None:
    # The SDK's connect waits ~30 s for an answer; the command said nothing until it gave up
    # (serve too, which connected inside the server's own code).
    command = durapipe_command(*words, "--address", f"127.0.0.1:{silent_port}")
    env = cli_env(DURAPIPE_SERVE_TOKEN="s3cret")
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stderr is not None
            first = process.stderr.readline()  # the note comes 3 s into the ~30 s wait
        finally:
            process.kill()
    assert first == (
        f"waiting for Temporal at 127.0.0.1:{silent_port} to answer (3 s so far; the connect "
        "gives up after about 30 s) ...\n"
    )


KEYED_PIPELINE = """\
routing:
  - provider: anthropic
    queue: llm-anthropic
models:
  gateway: {model: openai/gpt-gateway, api_base: "http://127.0.0.1:9/v1"}
pipes:
  ask: {kind: llm, model: openai/gpt-4o, inputs: {t: text}, prompt: "{{ t }}"}
  again: {kind: llm, model: openai/gpt-4o-mini, inputs: {t: text}, prompt: "{{ t }}"}
  claude: {kind: llm, model: anthropic/claude-haiku-4-5, inputs: {t: text}, prompt: "{{ t }}"}
  through_gateway: {kind: llm, model: gateway, inputs: {t: text}, prompt: "{{ t }}"}
  offline: {kind: llm, inputs: {t: text}, prompt: "{{ t }}"}
"""


def _warnings(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("warning:")]


def test_a_worker_warns_at_start_of_each_provider_key_its_pipes_lack(
    tmp_path: Path, temporal_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker without OPENAI_API_KEY started in silence; its first openai step failed later.
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    file = tmp_path / "keys.yaml"
    file.write_text(KEYED_PIPELINE)
    queue = f"keys-{tmp_path.name}"
    plain = tmp_path / "plain.log"
    WorkerProcess(file, temporal_address, queue, plain).stop()
    # Not the anthropic pipe (routed to a queue this worker does not serve), the gateway's model
    # (its endpoint is the operator's: what it asks for is not litellm's to say), the offline one.
    assert _warnings(plain) == [
        "warning: provider 'openai' has no key in this worker's environment (litellm looks for "
        "OPENAI_API_KEY): pipes 'ask', 'again' fail here with durapipe.AuthenticationError until "
        "it is set (in the environment or --secrets-file), unless a worker that has it takes them"
    ]
    # The key in its secrets file counts; serving the anthropic pool, that key is missing.
    secrets = tmp_path / "openai.env"
    secrets.write_text("OPENAI_API_KEY=sk-from-the-secrets-file\n")
    pooled = tmp_path / "pooled.log"
    WorkerProcess(
        file, temporal_address, queue, pooled,
        "--queue", queue, "--queue", "llm-anthropic", "--secrets-file", str(secrets),
    ).stop()  # fmt: skip
    assert _warnings(pooled) == [
        "warning: provider 'anthropic' has no key in this worker's environment (litellm looks "
        "for ANTHROPIC_API_KEY): pipe 'claude' fails here with durapipe.AuthenticationError "
        "until it is set (in the environment or --secrets-file), unless a worker that has it "
        "takes them"
    ]


def test_an_input_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    # `--input text=a --input text=b` ran with "b", the first value dropped in silence.
    file = str(_pipeline(tmp_path))
    twice = CliRunner().invoke(
        app, ["run", "shout", "--file", file, "--local", "--input", "text=a", "--input", "text=b"]
    )
    both = CliRunner().invoke(
        app,
        [
            "run",
            "shout",
            "--file",
            file,
            "--local",
            "--input-json",
            '{"text": "a"}',
            "-i",
            "text=b",
        ],
    )
    for result, why in ((twice, "it is given twice"), (both, "--input-json gives it too")):
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: --input text: {why}; give each input once (a list input takes one JSON "
            "value: --input 'text=[...]')\n"
        )
        assert result.stdout == ""


def test_run_without_its_file_says_how_to_give_it(tmp_path: Path) -> None:
    # `durapipe run brief.yaml` (the file where the pipe's name goes) was Typer's usage box:
    # "Missing option '--file' / '-f'."
    given_file = CliRunner().invoke(app, ["run", "brief.yaml", "--input", "article=hi"])
    given_pipe = CliRunner().invoke(app, ["run", "brief", "--local"])
    assert (given_file.exit_code, given_pipe.exit_code) == (2, 2)
    assert given_file.stderr == (
        "error: --file is missing: 'brief.yaml' looks like a pipeline file, and `run` takes the "
        "pipe's name first: `durapipe run PIPE --file brief.yaml` (`durapipe validate "
        "brief.yaml` lists its pipes)\n"
    )
    assert given_pipe.stderr == (
        "error: --file is missing: give the pipeline file that defines pipe 'brief' "
        "(`durapipe run brief --file FILE`)\n"
    )


def test_schedule_create_without_its_file_says_how_to_give_it() -> None:
    # It was Typer's usage box ("Missing option '--file' / '-f'."), as `run`'s was.
    given_file = CliRunner().invoke(app, ["schedule", "create", "nightly", "brief.yaml"])
    given_pipe = CliRunner().invoke(
        app, ["schedule", "create", "nightly", "brief", "--every", "1h"]
    )
    assert (given_file.exit_code, given_pipe.exit_code) == (2, 2)
    assert given_file.stderr == (
        "error: --file is missing: 'brief.yaml' looks like a pipeline file, and `schedule create` "
        "takes the pipe's name first: `durapipe schedule create nightly PIPE --file brief.yaml` "
        "(`durapipe validate brief.yaml` lists its pipes)\n"
    )
    assert given_pipe.stderr == (
        "error: --file is missing: give the pipeline file that defines pipe 'brief' "
        "(`durapipe schedule create nightly brief --file FILE`)\n"
    )


def test_an_id_for_a_local_run_is_refused(tmp_path: Path) -> None:
    # The id named nothing in-process (no history to show or wait for): it was taken silently.
    result = CliRunner().invoke(
        app, ["run", "shout", "--file", str(_pipeline(tmp_path)), "--local", "--id", "mine"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --id only applies on Temporal; a --local run keeps no history to find as 'mine' "
        "(run it without --local to name it, or without --id)\n"
    )
    assert result.stdout == ""


def test_every_file_option_says_in_one_sentence_why_it_cannot_read_it() -> None:
    # Typer checked these first, in its usage box: "Invalid value for '--tls-cert-path': path
    # ... is not readable", "Invalid value for '--methods': dir ... does not exist".
    folder = Path(tempfile.mkdtemp())  # pytest's tmp_path is in a folder only its user enters
    folder.chmod(0o755)
    locked = folder / "locked.pem"
    locked.write_text("x")
    locked.chmod(0)
    missing = folder / "missing"
    bundle = folder / "jokes.mthds"
    shutil.copy(Path(__file__).parents[1] / "mthds" / "bundles" / "jokes.mthds", bundle)
    pipeline = folder / "p.yaml"
    pipeline.write_text("pipes:\n  a: {kind: llm, prompt: hi}\n")
    tls = ["show", "x", "--address", "127.0.0.1:9"]
    cases = {
        (*tls, "--tls-cert-path", locked, "--tls-key-path", locked): (
            f"--tls-cert-path: cannot read '{locked}': Permission denied"
        ),
        (
            *tls,
            "--tls-ca-path",
            locked,
        ): f"--tls-ca-path: cannot read '{locked}': Permission denied",
        ("replay", "--file", locked): f"cannot read history '{locked}': Permission denied",
        (
            "serve",
            "--token-file",
            locked,
        ): f"--token-file: cannot read '{locked}': Permission denied",
        ("serve", "--deck", locked): f"model deck '{locked}' cannot be read: Permission denied",
        ("serve", locked): (
            f"pipeline file '{locked}' cannot be read: permission denied (its mode is "
            "----------); give the user running durapipe read access to it"
        ),
        ("serve", "--methods", missing): (
            f"--methods '{missing}': no such folder; give a folder of installed methods"
        ),
        ("validate", bundle, "--methods", pipeline): (
            f"--methods '{pipeline}' is a file; give a folder of installed methods"
        ),
        ("worker", pipeline, "--secrets-file", locked): (
            f"secrets file '{locked}': cannot read it: Permission denied"
        ),
    }
    env = cli_env(DURAPIPE_SERVE_TOKEN="s3cret")
    for args, sentence in cases.items():
        command = _as_another_user(durapipe_command(*map(str, args)))
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert (result.returncode, result.stderr) == (2, f"error: {sentence}\n"), args
    shutil.rmtree(folder)


def test_json_nested_past_the_recursion_limit_is_one_sentence(tmp_path: Path) -> None:
    # json.loads raised a RecursionError traceback for a few thousand brackets.
    deep = "[" * 5_000 + "]" * 5_000
    file = str(_pipeline(tmp_path))
    given = CliRunner().invoke(
        app, ["run", "shout", "--file", file, "--local", "--input-json", deep]
    )
    decided = CliRunner().invoke(app, ["approve", "some-run", "held", "--data", deep])
    assert (given.exit_code, given.stderr) == (
        2,
        "error: --input-json is not valid JSON: it nests too deeply to read at position 0\n",
    )
    assert (decided.exit_code, decided.stderr) == (
        2,
        "error: --data is not valid JSON: it nests too deeply to read at position 0\n",
    )
