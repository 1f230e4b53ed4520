"""The CLI in scripts (issue 17, item 5): --detach, Ctrl-C, clean stdout, one JSON shape,
--version, and a README whose commands all exist."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from tests.conftest import ARTICLE, EXAMPLES, ROOT
from tests.support import cli_env, durapipe_command, interruptible_popen, run_cli

BRIEF = str(EXAMPLES / "brief.yaml")
CONTROL = ROOT / "tests" / "fixtures" / "control.yaml"
runner = CliRunner()


def test_version() -> None:
    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert re.fullmatch(r"durapipe \d+\.\d+\S*\n", shown.stdout), shown.stdout


def test_every_command_the_readme_documents_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`durapipe ([a-z][a-z-]+)", readme))
    known = {g.name for g in app.registered_groups} | {
        c.name or c.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
        for c in app.registered_commands
    }
    assert named and named <= known, sorted(named - known)


def test_every_flag_the_readme_gives_a_command_exists() -> None:
    # `durapipe CMD ... --flag` in the README's text and its sh blocks: the flag is CMD's.
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", readme, re.M | re.S)
    written = re.findall(r"`(durapipe [^`]+)`", readme) + [
        m.group(1).split(" #")[0]
        for block in blocks
        for m in re.finditer(r"(?:^|\| |\$\()(durapipe [^\n]+)", block, re.M)
    ]
    root = typer.main.get_command(app)
    unknown = set()
    for text in written:
        words, command = text.split()[1:], root
        while words and words[0] in getattr(command, "commands", {}):  # typer's groups
            command = command.commands[words.pop(0)]  # type: ignore[attr-defined]
        if command is root:
            continue
        flags = {f for p in command.params for f in (*p.opts, *p.secondary_opts)}
        given = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words))
        unknown |= {(command.name, f) for f in given if f not in flags | {"--help"}}
    assert written and not unknown, sorted(unknown)


async def test_detach_prints_the_run_id_and_json_runs_print_steps_and_id_on_stderr(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.load(BRIEF)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"detached-{task_queue}"
    async with dp.build_worker(client, task_queue=task_queue):
        detached = await asyncio.to_thread(
            run_cli,
            "run", "brief", "--file", BRIEF, "--input", f"article={ARTICLE}", "--detach",
            "--id", run_id, "--address", temporal_address, "-t", task_queue,
        )  # fmt: skip
        assert detached.returncode == 0, detached.stderr
        assert detached.stdout == f"{run_id}\n"  # for `RUN=$(durapipe run ... --detach)`
        waited = await asyncio.to_thread(
            run_cli, "result", run_id, "--json", "--address", temporal_address
        )
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["word_count"] == len(ARTICLE.split())

        followed = await asyncio.to_thread(
            run_cli,
            "run", "brief", "--file", BRIEF, "--input", f"article={ARTICLE}", "--json",
            "--id", f"{run_id}-json", "--address", temporal_address, "-t", task_queue,
        )  # fmt: skip
    assert followed.returncode == 0, followed.stderr
    assert set(json.loads(followed.stdout)) == {"claims", "headline", "word_count", "verdict"}

    # One step in full, from the history: what it sent (rendered) and what it got.
    step = await asyncio.to_thread(
        run_cli, "show", run_id, "--step", "fact_check/verify", "--address", temporal_address
    )
    assert step.returncode == 0, step.stderr
    assert step.stdout.startswith(f"step fact_check/verify (llm) of run {run_id}\n--- inputs\n")
    rendered = step.stdout.split("--- user (rendered)\n", 1)[1]
    assert ARTICLE in rendered.split("--- answer\n")[0]
    answer = json.loads(rendered.split("--- answer\n")[1])
    assert answer == json.loads(waited.stdout)["verdict"]
    nothing = await asyncio.to_thread(
        run_cli, "show", run_id, "--step", "fact_check", "--address", temporal_address
    )
    assert nothing.returncode == 1 and nothing.stderr.startswith(
        f"error: run '{run_id}' has no call at step 'fact_check'"
    )
    assert "✓ fact_check/verify (" in followed.stderr
    assert f"run id: {run_id}-json" in followed.stderr


async def test_ctrl_c_leaves_the_run_going_and_says_how_to_get_back_to_it(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    pipeline = dp.load(CONTROL)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"interrupted-{task_queue}"
    log = tmp_path / "run.log"
    async with dp.build_worker(client, task_queue=task_queue):
        process = interruptible_popen(
            durapipe_command(
                "run", "review_post", "--file", str(CONTROL), "--input", "topic=rivers",
                "--id", run_id, "--address", temporal_address, "-t", task_queue,
            ),
            stdout=subprocess.PIPE, stderr=log.open("wb"), env=cli_env(),
        )  # fmt: skip
        # The wait for a human says what it waits for and how to end it (item 4).
        waiting = (
            f"⏸ review waiting for approval: Publish this post about rivers?; decide with "
            f"`durapipe approve {run_id} review` or `durapipe reject {run_id} review`"
        )
        deadline = time.monotonic() + 60
        while waiting not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 130
        assert (
            f"stopped following run {run_id}; it goes on: `durapipe result {run_id}` waits for "
            f"it, `durapipe cancel {run_id}` stops it"
        ) in log.read_text()
        assert "Traceback" not in log.read_text()
        # `result` waits for the same run, and Ctrl-C leaves it going the same way.
        waited = tmp_path / "result.log"
        process = interruptible_popen(
            durapipe_command("result", run_id, "--address", temporal_address),
            stdout=subprocess.PIPE, stderr=waited.open("wb"), env=cli_env(),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while f"waiting for run {run_id} to end" not in waited.read_text():
            assert process.poll() is None and time.monotonic() < deadline, waited.read_text()
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 30) == 130
        assert waited.read_text().splitlines()[-1] == (
            f"stopped waiting for run {run_id}; it goes on: `durapipe result {run_id}` waits for "
            f"it again, `durapipe cancel {run_id}` stops it"
        )
        await dp.client.cancel(client, run_id)


def test_list_commands_print_one_json_array(temporal_address: str) -> None:
    nobody = "WorkflowId = 'no-such-run'"
    for args in (["pending", "-q", nobody], ["runs", "--pipe", "no-such-pipe"]):
        shown = runner.invoke(app, [*args, "--json", "--address", temporal_address])
        assert shown.exit_code == 0, shown.stderr
        assert json.loads(shown.stdout) == [], (args, shown.stdout)


def test_blob_get_writes_a_blobs_bytes_and_refuses_a_bad_reference(
    blob_dir: Path, tmp_path: Path
) -> None:
    ref = dp.stores.upload(b"%PDF-1.4 test", name="t.pdf")
    target = tmp_path / "out.pdf"
    got = runner.invoke(app, ["blob", "get", ref.blob, str(target)])
    assert got.exit_code == 0, got.stderr
    assert target.read_bytes() == b"%PDF-1.4 test"
    as_json = runner.invoke(app, ["blob", "get", ref.model_dump_json(), "-"])
    assert as_json.stdout_bytes == b"%PDF-1.4 test"
    missing = runner.invoke(app, ["blob", "get", "sha256:" + "0" * 64, str(target)])
    assert missing.exit_code == 1 and missing.stderr.startswith("error: blob sha256:000")
    bad = runner.invoke(app, ["blob", "get", "nope", str(target)])
    assert bad.exit_code == 2
    assert bad.stderr == (
        "error: 'nope' is not a blob reference: give sha256:<64 hex digits> or the reference as JSON\n"
    )
