"""Encrypted payloads: nothing readable in history, the CLI decrypts with the key, rotation works,
a wrong key fails clearly, and the codec server decodes only for holders of its token."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from durapipe.ops._dev import free_port
from tests.conftest import ARTICLE, EXAMPLES
from tests.security.history import history_text
from tests.support import WorkerProcess, cli_env, durapipe_command, eventually

MARKER = "Zebra-Quartz-7741"  # a word of the input, to search history for
KEY_A, KEY_B = dp.security.new_encryption_key(), dp.security.new_encryption_key()
BRIEF = str(EXAMPLES / "brief.yaml")


def cli(*args: str, keys: str | None) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("DURAPIPE_ENCRYPTION_KEYS", None)
    if keys is not None:
        env["DURAPIPE_ENCRYPTION_KEYS"] = keys
    return subprocess.run(
        durapipe_command(*args), capture_output=True, text=True, env=env, timeout=120
    )


async def test_encrypted_history_holds_no_plain_text_and_only_the_key_reads_it(
    temporal_address: str, temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    article = f"{ARTICLE} {MARKER} said so."
    worker = WorkerProcess(
        Path(BRIEF), temporal_address, task_queue, tmp_path / "worker.log",
        DURAPIPE_ENCRYPTION_KEYS=f"k1:{KEY_A}",
    )  # fmt: skip
    run_id = f"enc-{task_queue}"
    try:
        ran = cli(
            "run", "brief", "--file", BRIEF, "--input", f"article={article}", "--json",
            "--id", run_id, "--address", temporal_address, "--task-queue", task_queue,
            keys=f"k1:{KEY_A}",
        )  # fmt: skip
    finally:
        worker.stop()
    assert ran.returncode == 0, ran.stderr
    output = json.loads(ran.stdout)

    searched = await history_text(temporal_env.client, [run_id, f"{run_id}/fact_check"])
    assert "binary/encrypted" in searched and "k1" in searched
    outputs = [output["headline"], output["verdict"], output["claims"][0]["text"]]
    for plain in (MARKER, "The council approved", *outputs):
        assert plain not in searched, plain

    def result(keys: str | None) -> subprocess.CompletedProcess[str]:
        return cli("result", run_id, "--json", "--address", temporal_address, keys=keys)

    for keys in (f"k1:{KEY_A}", f"k2:{KEY_B},k1:{KEY_A}"):  # the key, and after a rotation
        shown = result(keys)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == output
    failures = {
        f"k2:{KEY_B}": "encrypted with key 'k1', which this process does not have (known keys: k2)",
        f"k1:{KEY_B}": "does not decrypt with the key of that id here",
        None: "known keys: none: DURAPIPE_ENCRYPTION_KEYS is not set",
    }
    for keys, message in failures.items():
        failed = result(keys)
        assert failed.returncode == 2, (keys, failed.stderr)
        assert message in failed.stderr and "Traceback" not in failed.stderr, failed.stderr

    # A replay gate in CI decodes the run as its workers do, with the keys it is given.
    replayed = cli("replay", run_id, "--address", temporal_address, keys=f"k1:{KEY_A}")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert sorted(replayed.stdout.splitlines()) == [
        f"{run_id}/fact_check: compatible",
        f"{run_id}: compatible",
    ]
    # Without the keys (or with the wrong ones) a replay cannot tell: one sentence to set them,
    # not an INCOMPATIBLE verdict that would block a deploy on a false alarm.
    for keys, message in ((None, "DURAPIPE_ENCRYPTION_KEYS is not set"), (f"k2:{KEY_B}", "k2")):
        unkeyed = cli("replay", run_id, "--address", temporal_address, keys=keys)
        assert unkeyed.returncode == 2, unkeyed.stdout + unkeyed.stderr
        assert "INCOMPATIBLE" not in unkeyed.stdout + unkeyed.stderr, unkeyed.stdout
        assert f"cannot replay run '{run_id}'" in unkeyed.stderr, unkeyed.stderr
        assert message in unkeyed.stderr and "Traceback" not in unkeyed.stderr, unkeyed.stderr
        assert len(unkeyed.stderr.strip().splitlines()) == 1, unkeyed.stderr


async def test_without_keys_the_same_search_finds_the_plain_text(
    temporal_address: str, temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    # The control for the search above: it does find plain text when nothing is encrypted.
    pipeline = dp.load(BRIEF)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"plain-{task_queue}"
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(
            client, pipeline, "brief", {"article": MARKER}, run_id=run_id, task_queue=task_queue
        )
    assert MARKER in await history_text(temporal_env.client, [run_id])


def test_malformed_keys_are_refused_with_the_variable_named() -> None:
    with pytest.raises(dp.ConfigError, match="DURAPIPE_ENCRYPTION_KEYS: key 'k1' is 5 bytes"):
        dp.security.encryption_from_env(
            {"DURAPIPE_ENCRYPTION_KEYS": "k1:" + base64.b64encode(b"short").decode()}
        )
    with pytest.raises(dp.ConfigError, match="must look like id:base64key"):
        dp.security.encryption_from_env({"DURAPIPE_ENCRYPTION_KEYS": KEY_A})


@pytest.fixture
def codec_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "codec.log"
    env = cli_env(
        DURAPIPE_ENCRYPTION_KEYS_FILE=str(tmp_path / "keys"), DURAPIPE_CODEC_TOKEN="t0ken-abc"
    )
    (tmp_path / "keys").write_text(f"# current first\nk2:{KEY_B}\nk1:{KEY_A}\n")
    process = subprocess.Popen(
        durapipe_command("codec-server", "--port", str(port), "--cors-origin", "http://ui.example:8080"),
        stderr=log.open("wb"), stdout=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while "codec server on" not in log.read_text() or not _up(url):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        httpx.post(f"{url}/decode", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_codec_server_decodes_only_with_the_token(codec_server: str) -> None:
    old_key_payloads = asyncio.run(
        dp.security.EncryptionCodec({"k1": base64.b64decode(KEY_A)}).encode(
            [Payload(metadata={"encoding": b"json/plain"}, data=b'{"prompt": "secret plans"}')]
        )
    )
    body = json_format.MessageToJson(Payloads(payloads=old_key_payloads))
    auth = {"Authorization": "Bearer t0ken-abc"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "t0ken-abc"}):
        refused = httpx.post(f"{codec_server}/decode", content=body, headers=headers)
        assert refused.status_code == 401 and "secret plans" not in refused.text

    decoded = httpx.post(f"{codec_server}/decode", content=body, headers=auth)
    assert decoded.status_code == 200
    payload = json_format.Parse(decoded.text, Payloads()).payloads[0]
    assert payload.data == b'{"prompt": "secret plans"}'  # encrypted with the older key k1

    encoded = httpx.post(f"{codec_server}/encode", content=decoded.text, headers=auth)
    sealed = json_format.Parse(encoded.text, Payloads()).payloads[0]
    assert sealed.metadata["encryption-key-id"] == b"k2" and b"secret" not in sealed.data

    ui = {"Origin": "http://ui.example:8080", "Access-Control-Request-Method": "POST"}
    preflight = httpx.options(f"{codec_server}/decode", headers=ui)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://ui.example:8080"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    stranger = httpx.options(
        f"{codec_server}/decode", headers={**ui, "Origin": "http://evil.example"}
    )
    assert stranger.status_code == 403 and "Access-Control-Allow-Origin" not in stranger.headers


def test_codec_server_will_not_start_without_a_token() -> None:
    env = cli_env(DURAPIPE_ENCRYPTION_KEYS=f"k1:{KEY_A}")
    env.pop("DURAPIPE_CODEC_TOKEN", None)
    started = subprocess.run(
        durapipe_command("codec-server"), capture_output=True, text=True, env=env, timeout=60
    )
    assert started.returncode == 2 and "needs a bearer token" in started.stderr


async def test_a_worker_without_the_key_logs_one_line_per_failed_task_not_a_traceback(
    temporal_address: str, temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    # A run started by a client with keys, on a worker without them (an operator's mistake):
    # the worker logged the SDK's traceback of the codec, and the core's warning with the whole
    # stack in it, at every attempt of the workflow task.
    log = tmp_path / "worker.log"
    worker = WorkerProcess(Path(BRIEF), temporal_address, task_queue, log)
    run_id = f"unkeyed-{task_queue}"
    try:
        started = cli(
            "run", "brief", "--file", BRIEF, "--input", "article=x", "--detach", "--id", run_id,
            "--address", temporal_address, "--task-queue", task_queue, keys=f"k1:{KEY_A}",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        said = "a payload is encrypted with key 'k1', which this process does not have"

        async def told_twice() -> bool:
            return log.read_text(errors="replace").count(said) >= 2

        await eventually(told_twice, "two failed workflow tasks in the worker's log")
    finally:
        worker.stop()
        await temporal_env.client.get_workflow_handle(run_id).terminate(reason="test")
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "stack_trace" not in text, text
    run = (await temporal_env.client.get_workflow_handle(run_id).describe()).run_id
    told = [line for line in text.splitlines() if said in line]
    assert told[0] == (
        f"a workflow task of run ID {run} cannot be decoded here: {said} (known keys: none: "
        "DURAPIPE_ENCRYPTION_KEYS is not set); add it to DURAPIPE_ENCRYPTION_KEYS or "
        "DURAPIPE_ENCRYPTION_KEYS_FILE"
    ), told
