"""The CLI as a user types it: a worker process, `run`, `validate`, `--local`, and the exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durapipe.cli import app
from tests.conftest import ARTICLE, EXAMPLES, ROOT
from tests.support import WorkerProcess, cli_env, interruptible_popen, run_cli

INVALID = ROOT / "tests" / "spec" / "invalid"
runner = CliRunner()


@pytest.fixture
def yaml_worker(temporal_address: str, task_queue: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        EXAMPLES / "brief.yaml", temporal_address, task_queue, tmp_path / "worker.log"
    )
    yield worker
    worker.stop()


def test_worker_says_what_it_waits_for_before_it_is_ready(yaml_worker: WorkerProcess) -> None:
    # litellm's import takes seconds (tens on a busy host): the worker said nothing meanwhile.
    log = yaml_worker.log.read_text()
    starting = log.index("worker starting: loading the model library (litellm)")
    assert starting < log.index("worker ready"), log


def test_run_json_on_temporal_local_and_python_spelling_print_the_same_output(
    temporal_address: str, task_queue: str, yaml_worker: WorkerProcess
) -> None:
    common = ["--input-json", json.dumps({"article": ARTICLE}), "--json"]
    on_temporal = run_cli(
        "run", "brief", "--file", str(EXAMPLES / "brief.yaml"), *common,
        "--id", f"cli-{task_queue}", "--address", temporal_address, "--task-queue", task_queue,
    )  # fmt: skip
    assert on_temporal.returncode == 0, on_temporal.stderr
    output = json.loads(on_temporal.stdout)  # stdout holds only the output
    assert set(output) == {"claims", "headline", "word_count", "verdict"}
    assert output["word_count"] == len(ARTICLE.split())

    local = run_cli("run", "brief", "--file", str(EXAMPLES / "brief.yaml"), *common, "--local")
    python_spelling = run_cli(
        "run", "brief", "--file", str(EXAMPLES / "brief.py"), *common, "--local"
    )
    assert local.returncode == 0 and python_spelling.returncode == 0, (
        local.stderr + python_spelling.stderr
    )
    assert json.loads(local.stdout) == json.loads(python_spelling.stdout) == output


def test_run_without_json_shows_steps_run_id_and_ui_link(
    temporal_address: str, task_queue: str, yaml_worker: WorkerProcess
) -> None:
    run_id = f"human-{task_queue}"
    shown = run_cli(
        "run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--input", f"article={ARTICLE}",
        "--id", run_id, "--address", temporal_address, "--task-queue", task_queue,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for path in ("extract_claims", "headline", "fact_check/count_words", "fact_check/verify"):
        assert f"✓ {path} (" in shown.stderr
    # The nested sequence finishes after its steps, and its line says so by coming after theirs.
    assert shown.stderr.index("✓ fact_check/verify (") < shown.stderr.index("✓ fact_check (")
    assert f"run id: {run_id}" in shown.stderr
    assert f"/namespaces/default/workflows/{run_id}" in shown.stderr
    # stdout holds the output alone, so `durapipe run ... | jq` works without --json.
    assert set(json.loads(shown.stdout)) == {"claims", "headline", "word_count", "verdict"}


@pytest.mark.parametrize("name", ["unknown_pipe.yaml", "undeclared_variable.yaml", "bad_yaml.yaml"])
def test_malformed_files_fail_validate_and_run_without_starting_a_workflow(
    name: str, temporal_address: str, task_queue: str
) -> None:
    validated = runner.invoke(app, ["validate", str(INVALID / name)])
    assert validated.exit_code == 2
    assert "nothing was started" in validated.stderr and "Traceback" not in validated.stderr

    run_id = f"never-{task_queue}"
    ran = run_cli(
        "run", "main", "--file", str(INVALID / name), "--input-json", "{}",
        "--id", run_id, "--address", temporal_address, "--task-queue", task_queue,
    )  # fmt: skip
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ran.stderr.startswith("error: the pipeline has")
    described = subprocess.run(
        [str(Path(sys.executable).parent / "temporal"), "workflow", "describe", "--workflow-id", run_id,
         "--address", temporal_address],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (
        described.returncode != 0 and "not found" in (described.stderr + described.stdout).lower()
    )


def test_user_mistakes_are_one_sentence_and_exit_2(temporal_address: str) -> None:
    brief = str(EXAMPLES / "brief.yaml")
    cases = {
        (
            "run",
            "brief",
            "--file",
            brief,
            "--input-json",
            "{not json",
        ): "error: --input-json is not valid JSON",
        ("run", "nope", "--file", brief, "--local"): "pipe 'nope': no such pipe",
        (
            "run",
            "brief",
            "--file",
            brief,
            "--local",
            "--input-json",
            "{}",
        ): "pipe 'brief', input 'article': missing",
        (
            "run",
            "brief",
            "--file",
            "missing.yaml",
            "--local",
        ): "error: pipeline file 'missing.yaml' does not exist",
        ("validate", str(ROOT / "pyproject.toml")): "must end in .yaml, .yml, .py or .mthds",
        # A folder was said not to exist.
        ("run", "brief", "--file", str(EXAMPLES), "--local"): (
            f"error: '{EXAMPLES}' is a folder without METHODS.toml: give a pipeline file "
            "(.yaml, .yml, .py or .mthds) or an MTHDS package folder"
        ),
        ("runs", "--limit", "0"): "Invalid value for '--limit'",
        # A folder given as a file input was said to be "no such file".
        ("run", "brief", "--file", brief, "--local", "--input", f"article=@{EXAMPLES}"): (
            f"error: --input article: cannot read '{EXAMPLES}': it is a folder, not a file"
        ),
        # The @ forgotten: a path given as text to a document input.
        (
            "run",
            "invoice",
            "--file",
            str(EXAMPLES / "invoice.yaml"),
            "--local",
            "--input",
            "document=examples/invoice.pdf",
        ): (
            "pipe 'invoice', input 'document': expected document, got the text "
            "'examples/invoice.pdf'; pass a file as --input document=@PATH"
        ),
    }
    for args, expected in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_unreachable_server_is_a_clear_error() -> None:
    result = runner.invoke(
        app,
        [
            "run",
            "brief",
            "--file",
            str(EXAMPLES / "brief.yaml"),
            "--input",
            "article=x",
            "--address",
            "127.0.0.1:1",
        ],
    )
    assert result.exit_code == 2
    # The transport's reason in words, not the SDK's nested Rust error it came in.
    assert result.stderr == (
        "error: cannot reach Temporal at 127.0.0.1:1 (namespace default): connection refused "
        "(nothing listens there); start a dev server with `durapipe dev`, or check "
        "TEMPORAL_ADDRESS and the TLS settings\n"
    )
    unknown = runner.invoke(
        app, ["run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--input", "article=x",
              "--address", "nosuchhost.invalid:7233"],
    )  # fmt: skip
    assert unknown.exit_code == 2
    assert "(namespace default): cannot resolve host 'nosuchhost.invalid' (" in unknown.stderr
    assert "tonic" not in unknown.stderr, unknown.stderr


def test_an_address_that_is_not_host_port_is_one_sentence(temporal_address: str) -> None:
    # A URL copied from the UI's address bar used to start the run anyway, under the SDK's raw
    # "UserWarning: Target host as URL with scheme no longer supported" and with no UI link; a
    # host without a port said "connection refused" at an address the user never meant.
    host = temporal_address.rsplit(":", 1)[0]
    cases = {
        f"http://{temporal_address}": (
            f"error: address 'http://{temporal_address}' is not host:port: leave out 'http://' "
            f"(--address {temporal_address})\n"
        ),
        host: (
            f"error: address '{host}' has no port: write host:port (--address {host}:7233, "
            "the dev server's default port)\n"
        ),
    }
    for address, expected in cases.items():
        for args in (["run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--input",
                      "article=x"], ["worker", str(EXAMPLES / "brief.yaml")], ["runs"]):  # fmt: skip
            result = runner.invoke(app, [*args, "--address", address])
            assert result.exit_code == 2, (args, result.stderr)
            assert result.stderr == expected, (args, result.stderr)


def test_an_address_from_the_environment_or_a_profile_is_named_where_it_came_from(
    temporal_address: str, tmp_path: Path
) -> None:
    # A TEMPORAL_ADDRESS with a scheme used to be told to fix --address, a flag the user never gave.
    url = f"http://{temporal_address}"
    profile = tmp_path / "temporal.toml"
    profile.write_text(f'[profile.default]\naddress = "{url}"\n')
    cases = {
        (("TEMPORAL_ADDRESS", url),): (
            f"error: TEMPORAL_ADDRESS '{url}' is not host:port: leave out 'http://' "
            f"(TEMPORAL_ADDRESS={temporal_address})\n"
        ),
        (("TEMPORAL_ADDRESS", "localhost"),): (
            "error: TEMPORAL_ADDRESS 'localhost' has no port: write host:port "
            "(TEMPORAL_ADDRESS=localhost:7233, the dev server's default port)\n"
        ),
        (("TEMPORAL_CONFIG_FILE", str(profile)),): (
            f"error: the address '{url}' of profile 'default' in {profile} is not host:port: "
            f"leave out 'http://' (address = \"{temporal_address}\")\n"
        ),
    }
    for env, expected in cases.items():
        result = runner.invoke(app, ["runs"], env={"TEMPORAL_ADDRESS": None, **dict(env)})
        assert result.exit_code == 2, (env, result.stderr)
        assert result.stderr == expected, (env, result.stderr)


def test_worker_metrics_port_in_use_is_one_sentence(temporal_address: str) -> None:
    # The SDK's ValueError used to escape as a traceback (exit 1).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "worker", str(EXAMPLES / "brief.yaml"), "--address", temporal_address,
            "--task-queue", "metrics-port-taken", "--metrics-port", str(port),
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: cannot serve metrics on 127.0.0.1:{port}: Failed starting Prometheus "
        f"exporter: Address already in use (os error 98); choose another --metrics-port"
    )


@pytest.mark.parametrize("command", ["serve", "codec-server"])
def test_http_servers_on_a_taken_port_are_one_sentence(
    temporal_address: str, command: str, tmp_path: Path
) -> None:
    # aiohttp's OSError used to escape as a traceback (exit 1).
    key = run_cli("codec-key", "k1").stdout.strip()
    env = {
        "DURAPIPE_SERVE_TOKEN": "t",
        "DURAPIPE_CODEC_TOKEN": "t",
        "DURAPIPE_ENCRYPTION_KEYS": key,
    }
    args = (
        [str(EXAMPLES / "brief.yaml"), "--address", temporal_address] if command == "serve" else []
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(command, *args, "--port", str(port), env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; choose another --port"
    )


def test_ctrl_c_before_a_command_runs_exits_130_without_a_traceback() -> None:
    # Ctrl-C while typer still builds the command (1.5 s into `durapipe demo` on a busy machine)
    # is outside every command's own handling: it printed a KeyboardInterrupt traceback.
    interrupted = (
        "import durapipe.cli._app as cli\n"
        "def app(**_):\n"
        "    raise KeyboardInterrupt\n"
        "cli.app = app\n"
        "cli.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", interrupted], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("command", "default"),
    [
        (["dev"], "[default: port + 1000]"),
        (["dev"], "[default: memory]"),
        (["run"], "[default: new]"),
        (["worker"], "[default: --task-queue]"),
        (["approve"], "[default: your user name]"),
        (["run"], "[default: env DURAPIPE_SEARCHABLE_TOTALS, else on]"),
        (["checkpoints", "prune"], "[default: DURAPIPE_CHECKPOINT_TTL, else 30d]"),
    ],
)
def test_help_shows_the_defaults_written_in_words(command: list[str], default: str) -> None:
    # Written inside the help text, rich took "[default: ...]" for markup and dropped it:
    # `durapipe dev --help` read "Web UI port ." with no default.
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert default in result.stdout


def test_input_of_a_list_or_structure_type_is_read_as_json(tmp_path: Path) -> None:
    # `--input xs=[1,2]` for a list[integer] input passed the text "[1,2]": "Input should be a
    # valid list", with no way to give a list but --input-json.
    file = tmp_path / "lists.yaml"
    file.write_text(
        "structures:\n"
        "  Point: {fields: {x: integer, y: integer}}\n"
        "pipes:\n"
        "  show:\n"
        "    kind: llm\n"
        "    inputs:\n"
        "      xs: list[integer]\n"
        "      at: Point\n"
        "      label: text\n"
        '    prompt: "{{ xs | sum }} {{ at.x }} {{ label }}"\n'
    )
    ok = runner.invoke(
        app,
        ["run", "show", "--file", str(file), "--local", "--json",
         "--input", "xs=[1, 2]", "--input", 'at={"x": 3, "y": 4}', "--input", "label=[not json]"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    assert "3 3 [not json]" in json.loads(ok.stdout)
    # A broken list, and one written as a shell user would (`xs=1,2`): told the shape to write.
    for value, why in (
        ("[1,", "Expecting value at position 3"),
        ("1,2", "Extra data at position 1"),
    ):
        bad = runner.invoke(
            app, ["run", "show", "--file", str(file), "--local", "--input", f"xs={value}",
                  "--input", 'at={"x": 3, "y": 4}', "--input", "label=x"],
        )  # fmt: skip
        assert bad.exit_code == 2
        assert bad.stderr.strip() == (
            f"error: --input xs: a list[integer] input takes JSON (--input 'xs=[...]'): {why}"
        )


def test_validate_refuses_a_file_with_no_pipes_but_takes_a_limits_file(tmp_path: Path) -> None:
    # An empty file (or one with models but no pipes) validated as "ok, 0 pipes", exit 0.
    empty, models_only, limits_only = (tmp_path / n for n in ("e.yaml", "m.yaml", "l.yaml"))
    empty.write_text("")
    models_only.write_text("models:\n  fast: durapipe/offline\n")
    limits_only.write_text("limits:\n  - kind: llm\n    concurrency: 2\n")
    for file in (empty, models_only):
        refused = runner.invoke(app, ["validate", str(file)])
        assert refused.exit_code == 2, refused.stdout
        assert refused.stderr == (
            f"error: pipeline file '{file}' defines no pipes: write them under `pipes:` "
            "(see the README's Pipes section)\n"
        )
    # A worker's --limits file has limits and no pipes on purpose.
    taken = runner.invoke(app, ["validate", str(limits_only)])
    assert taken.exit_code == 0, taken.stderr
    assert taken.stdout == f"{limits_only}: ok, no pipes, 1 limit (a worker's --limits file)\n"


# A child `durapipe run --local` whose litellm `completion` (run by `acompletion` in an executor
# thread) says when it starts and then waits for the file the test writes once it has sent the
# Ctrl-C, so the Ctrl-C lands in that thread's work however slow the machine (a fixed second was
# once too short under a loaded parallel suite: the run finished first and exited 0).
_SLOW_COMPLETION = """
import os, sys, time
import litellm.main
real = litellm.main.completion
def slow(*args, **kwargs):
    print("completion started", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["SENT_FLAG"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return real(*args, **kwargs)
litellm.main.completion = slow
sys.argv = ["durapipe", *sys.argv[1:]]
from durapipe.cli import main
main()
"""


def test_ctrl_c_of_a_local_json_run_exits_130_without_a_warning(tmp_path: Path) -> None:
    # It printed `RuntimeWarning: coroutine 'OfflineModel.acompletion' was never awaited`: the
    # coroutine litellm's thread returned after the cancellation had nobody to await it.
    file = tmp_path / "slow.yaml"
    file.write_text("pipes:\n  ask:\n    kind: llm\n    inputs: {q: text}\n    prompt: '{{ q }}'\n")
    child = interruptible_popen(
        [sys.executable, "-c", _SLOW_COMPLETION, "run", "ask", "--file", str(file), "--local",
         "--json", "--input", "q=hi"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**cli_env(), "SENT_FLAG": str(tmp_path / "sent")},
    )  # fmt: skip
    try:
        assert child.stderr is not None
        assert child.stderr.readline() == "completion started\n"
        child.send_signal(signal.SIGINT)
        (tmp_path / "sent").touch()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # No warning: the one line says what the run's calls spent (nothing was answered).
    said = "stopped by Ctrl-C; what its calls had spent (those in flight included): tokens: 0 in / 0 out, cost: $0.000000\n"  # fmt: skip
    assert (child.returncode, out, err) == (130, "", said)


def test_approve_data_that_is_bare_text_says_how_to_write_it() -> None:
    # `--data 'A better post.'` (the README writes '"A better post."') said only "Expecting
    # value at position 0"; the text a reviewer means is a JSON string, in quotes.
    result = runner.invoke(app, ["approve", "r", "review", "--data", "A better post."])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --data is not valid JSON: Expecting value at position 0 (text is a JSON string, "
        """in quotes: --data '"A better post."')\n"""
    )
    listed = runner.invoke(app, ["approve", "r", "review", "--data", "[1,"])
    assert listed.exit_code == 2 and "in quotes" not in listed.stderr, listed.stderr
