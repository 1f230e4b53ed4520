"""The real `mthds` client (and `pipelex-sdk`'s lifecycle client) against `durapipe serve`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from mthds.protocol.models import InvalidValidationReport, ValidationReport
from mthds.runners.api.exceptions import ApiResponseError, RunStillRunningError
from pipelex_sdk.errors import RunFailedError, RunTimeoutError
from pipelex_sdk.runs import RunProgress, RunStatus, WaitForResultOptions
from temporalio.client import Client, WorkflowExecutionStatus
from typer.testing import CliRunner

from durapipe.cli import app
from tests.serve.conftest import (
    HERE,
    TOKEN,
    Served,
    entered,
    lifecycle_client,
    mthds_client,
    start_serve,
    start_worker,
)

METHOD = {"method.yaml": (HERE / "method.yaml").read_text()}
TEXT = "The council approved the new bridge on Monday."


async def test_version_and_models(served: Served) -> None:
    async with mthds_client(served) as client:
        info = await client.version()
        deck = await client.models()
        llms = await client.models("llm")
    assert info.protocol_version == "1.0"
    assert info.blob_store is False
    names = {m.name for m in deck.models}
    assert {"durapipe/offline", "durapipe/local"} <= names
    assert {m.name for m in llms.models} == {"durapipe/offline"}


async def test_validate_reports_every_problem(served: Served) -> None:
    broken = """
version: 1
pipes:
  a:
    kind: llm
    model: openai/gpt-4o
    inputs: {text: text}
    prompt: "{{ text }} {{ missing }}"
  b:
    kind: tool
    function: os:system
    inputs: {text: text}
"""
    async with mthds_client(served) as client:
        good = await client.validate(METHOD)
        bad = await client.validate({"bad.yaml": broken})
    assert isinstance(good, ValidationReport)
    assert isinstance(bad, InvalidValidationReport)
    assert bad.is_runnable is False
    details = [e.detail for e in bad.errors]
    assert any("missing" in d for d in details), details


async def test_validate_refuses_what_the_workers_do_not_offer(served: Served) -> None:
    overstepping = """
version: 1
pipes:
  a:
    kind: llm
    model: openai/gpt-4o
    inputs: {text: text}
    prompt: "{{ text }}"
    settings: {api_base: "http://evil.example"}
  b:
    kind: tool
    function: os:getcwd
"""
    async with mthds_client(served) as client:
        # An endpoint in a pipe is refused by the loader itself, before the deck is consulted.
        verdict = await client.validate({"m.yaml": overstepping})
    assert isinstance(verdict, InvalidValidationReport)
    codes = {(e.code, e.location.field if e.location else None) for e in verdict.errors}
    assert ("method.model_setting_invalid", "settings.api_base") in codes
    without = overstepping.replace('    settings: {api_base: "http://evil.example"}\n', "")
    async with mthds_client(served) as client:
        verdict = await client.validate({"m.yaml": without})
    assert isinstance(verdict, InvalidValidationReport)
    codes = {(e.code, e.location.field if e.location else None) for e in verdict.errors}
    assert ("model.unknown", "model") in codes
    assert ("method.function_invalid", "function") in codes


async def test_execute_runs_a_temporal_workflow(served: Served, temporal_env: object) -> None:
    async with mthds_client(served) as client:
        result = await client.execute(
            pipe_code="loud_summary",
            files=METHOD,
            inputs={"text": {"concept": "native.Text", "content": {"text": TEXT}}},
        )
    memory = result.pipe_output.working_memory
    main = memory.root[result.model_extra["main_stuff_name"]]
    assert main.concept == "native.Text"
    assert main.content["text"] == main.content["text"].upper() and main.content["text"]
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    description = await temporal.get_workflow_handle(result.pipeline_run_id).describe()
    assert description.workflow_type == "durapipe.pipe"
    assert description.status == WorkflowExecutionStatus.COMPLETED


async def test_start_then_wait_for_result(served: Served, temporal_env: object) -> None:
    async with mthds_client(served) as client:
        started = await client.start(pipe_code="loud_summary", files=METHOD, inputs={"text": TEXT})
    async with lifecycle_client(served.url) as lifecycle:
        results = await lifecycle.wait_for_result(
            started.pipeline_run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
        )
        status = await lifecycle.get_run_status(started.pipeline_run_id)
        progress = await lifecycle.get_run_progress(started.pipeline_run_id)
    assert status.status == RunStatus.COMPLETED
    assert status.pipe_code == "loud_summary"
    assert results.main_stuff["text"].isupper()
    assert progress.status == "succeeded"
    assert [(i.pipe_code, i.status) for i in progress.invocations] == [
        ("summarize", "succeeded"),
        ("shout", "succeeded"),
    ]
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    description = await temporal.get_workflow_handle(started.pipeline_run_id).describe()
    assert description.workflow_type == "durapipe.pipe"


async def test_refusals_are_problem_documents(served: Served) -> None:
    async with mthds_client(served, token="wrong") as client:
        with pytest.raises(ApiResponseError) as wrong:
            await client.models()
    assert wrong.value.status == 401
    assert wrong.value.problem.code == "auth.invalid_credential"
    async with httpx.AsyncClient() as raw:
        missing = await raw.get(f"{served.url}/v1/models")
    assert missing.status_code == 401
    assert missing.json()["code"] == "auth.missing_credential"
    async with mthds_client(served) as client:
        with pytest.raises(ApiResponseError) as unknown:
            await client.start(pipe_code="nope", files=METHOD)
        with pytest.raises(ApiResponseError) as escaping:
            await client.start(pipe_code="loud_summary", files={"../etc/x.yaml": "version: 1"})
    assert unknown.value.problem.code == "request.pipe_not_found"
    assert "nope" in unknown.value.problem.detail
    assert escaping.value.problem.code == "security.method_path_refused"


async def test_a_body_nested_past_the_parsers_depth_is_malformed_not_unexpected(
    served: Served,
) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000  # Python's json recurses once per level
    async with httpx.AsyncClient() as raw:
        answer = await raw.post(
            f"{served.url}/v1/start", content=nested, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 422
    assert answer.json()["code"] == "request.malformed"
    assert "nested" in answer.json()["detail"]
    assert not any("Traceback" in line for line in served.log)


async def test_a_run_outlives_a_killed_server(
    temporal_address: str, worker: str, gate_dir: Path, temporal_env: object
) -> None:
    gated = METHOD["method.yaml"].replace("serve_tools:shout", "serve_tools:gate")
    before = set(gate_dir.glob("entered-*"))
    first = await start_serve(temporal_address, worker, gate_dir)  # this test's own, to kill
    try:
        async with mthds_client(first) as client:
            started = await client.start(
                pipe_code="loud_summary", files={"method.yaml": gated}, inputs={"text": TEXT}
            )
        run_id = started.pipeline_run_id
        key = await _entered(gate_dir, before)  # the run is mid-way, waiting at its gate
    finally:
        await first.kill()  # SIGKILL, by its own pid: nothing of the server survives
    again = await start_serve(temporal_address, worker, gate_dir)
    try:
        async with lifecycle_client(again.url) as lifecycle:
            assert (await lifecycle.get_run_status(run_id)).status == RunStatus.RUNNING
            progress = await lifecycle.get_run_progress(run_id)  # read live, from the run
            assert progress.status == "running"
            assert ("shout", "running") in [(i.pipe_code, i.status) for i in progress.invocations]
            (gate_dir / f"open-{key}").touch()
            results = await lifecycle.wait_for_result(
                run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
            )
    finally:
        await again.stop()
    assert results.main_stuff["text"].startswith("passed: ")  # it went through the gate
    assert results.working_memory is not None
    assert results.working_memory.root["text"].content == {"text": TEXT}
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    description = await temporal.get_workflow_handle(run_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED


async def _entered(gate_dir: Path, before: set[Path]) -> str:
    """The key of the next run to reach the gate (see `serve_tools.gate`), once it has."""
    [key] = await entered(gate_dir, before)
    return key


async def test_a_start_sent_again_with_its_idempotency_key_starts_nothing(
    served: Served, temporal_env: object
) -> None:
    key = f"start-{uuid.uuid4()}"
    options = WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    async with lifecycle_client(served.url) as client:
        first = await client.start(
            pipe_code="loud_summary", files=METHOD, inputs={"text": TEXT}, idempotency_key=key
        )
        again = await client.start(
            pipe_code="loud_summary", files=METHOD, inputs={"text": TEXT}, idempotency_key=key
        )
        await client.wait_for_result(first.pipeline_run_id, options)
        execution = (await temporal.get_workflow_handle(first.pipeline_run_id).describe()).run_id
        after_it_ended = await client.start(
            pipe_code="loud_summary", files=METHOD, inputs={"text": TEXT}, idempotency_key=key
        )
        latest = (await temporal.get_workflow_handle(first.pipeline_run_id).describe()).run_id
        other = await client.start(
            pipe_code="loud_summary", files=METHOD, inputs={"text": TEXT}, idempotency_key=key + "x"
        )
    assert first.pipeline_run_id == again.pipeline_run_id == after_it_ended.pipeline_run_id
    assert latest == execution  # no second workflow execution was started after the first ended
    assert other.pipeline_run_id != first.pipeline_run_id


def test_serve_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAPIPE_SERVE_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "needs a bearer token" in result.output
    assert "Traceback" not in result.output


async def test_a_failed_run_is_a_problem_naming_its_step(served: Served) -> None:
    failing = METHOD["method.yaml"].replace("serve_tools:shout", "serve_tools:refuse")
    async with mthds_client(served) as client:
        with pytest.raises(ApiResponseError) as executed:
            await client.execute(
                pipe_code="loud_summary", files={"method.yaml": failing}, inputs={"text": TEXT}
            )
        started = await client.start(
            pipe_code="loud_summary", files={"method.yaml": failing}, inputs={"text": TEXT}
        )
        with pytest.raises(ApiResponseError) as missing:
            await client.start(pipe_code="loud_summary", files=METHOD, inputs={})
    assert executed.value.status == 409
    assert executed.value.problem.code == "run.failed"
    assert "step 'shout'" in executed.value.problem.detail  # the failed step
    assert "refused on purpose" in executed.value.problem.detail
    async with lifecycle_client(served.url) as lifecycle:
        with pytest.raises(RunFailedError) as failed:
            await lifecycle.wait_for_result(
                started.pipeline_run_id,
                WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120),
            )
        status = await lifecycle.get_run_status(started.pipeline_run_id)
    assert failed.value.status == RunStatus.FAILED
    assert "refused on purpose" in str(failed.value)
    assert status.status == RunStatus.FAILED
    assert missing.value.status == 422
    assert missing.value.problem.code == "input.missing"
    assert "input 'text'" in missing.value.problem.detail


async def test_a_long_execute_answers_with_its_run_id(
    temporal_address: str, worker: str, gate_dir: Path
) -> None:
    gated = METHOD["method.yaml"].replace("serve_tools:shout", "serve_tools:gate")
    before = set(gate_dir.glob("entered-*"))
    server = await start_serve(temporal_address, worker, gate_dir, "--execute-wait", "0.5")
    try:
        async with mthds_client(server) as client:
            with pytest.raises(RunStillRunningError) as still:
                await client.execute(
                    pipe_code="loud_summary",
                    files={"method.yaml": gated},
                    inputs={"text": "A long run: " + TEXT},
                )
        key = await _entered(gate_dir, before)
        (gate_dir / f"open-{key}").touch()
        async with lifecycle_client(server.url) as lifecycle:
            results = await lifecycle.wait_for_result(
                still.value.run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
            )
    finally:
        await server.stop()
    assert results.main_stuff["text"].startswith("passed: ")


async def test_an_execute_no_worker_can_run_says_so_within_seconds(
    temporal_address: str, gate_dir: Path, temporal_env: object
) -> None:
    # It used to hold the connection for --execute-wait (600 s) and say nothing, in the answer
    # or the server's log: a client saw only its own timeout.
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    server = await start_serve(temporal_address, nobody, gate_dir, "--execute-wait", "120")
    try:
        async with asyncio.timeout(40), httpx.AsyncClient(timeout=60) as raw:
            answer = await raw.post(
                f"{server.url}/v1/execute",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"pipe_code": "loud_summary", "files": METHOD, "inputs": {"text": TEXT}},
            )
    finally:
        await server.stop()
    # Not a 503 runtime.unavailable: its step is to send the request again, a second run.
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    run_id = problem["pipeline_run_id"]
    assert problem["code"] == "run.not_finished"
    assert problem["detail"] == (
        f"Run '{run_id}' was started but cannot make progress: no worker polls task queue "
        f"'{nobody}' (namespace 'default'), so nothing runs it; start one with `durapipe worker "
        f"FILE -t {nobody}`. The run stays queued and goes on once a worker polls the queue: "
        f"follow it at /v1/runs/{run_id}/status rather than sending the request again."
    )
    assert any(problem["detail"] in line for line in server.log), server.log
    # The operator heard it at the start already, before any client came.
    assert (
        f"note: no worker polls task queue '{nobody}' now: runs wait until one does "
        f"(`durapipe worker FILE -t {nobody}`)\n"
    ) in server.log, server.log
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    handle = temporal.get_workflow_handle(run_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await handle.terminate("test over")


async def test_a_polled_run_no_worker_runs_says_why_until_one_does(
    temporal_address: str, gate_dir: Path
) -> None:
    # It used to answer RUNNING (and 202) for as long as the run waited, saying nothing of why:
    # pipelex-sdk's wait_for_result polled in silence until its own timeout.
    queue = f"later-{uuid.uuid4().hex[:8]}"
    gated = METHOD["method.yaml"].replace("serve_tools:shout", "serve_tools:gate")
    server = await start_serve(temporal_address, queue, gate_dir)
    worker: Served | None = None
    try:
        async with mthds_client(server) as client:
            # A text of its own: each text has its own gate (another test's may stand open).
            text = f"Polled while queue {queue} had no worker. {TEXT}"
            started = await client.start(
                pipe_code="loud_summary", files={"method.yaml": gated}, inputs={"text": text}
            )
        run_id = started.pipeline_run_id
        said = (
            f"Run '{run_id}' cannot make progress: no worker polls task queue '{queue}' "
            f"(namespace 'default'), so nothing runs it; start one with `durapipe worker FILE "
            f"-t {queue}`. It stays queued and goes on once a worker polls the queue."
        )
        snapshots: list[RunProgress] = []
        async with lifecycle_client(server.url) as lifecycle:
            status = await lifecycle.get_run_status(run_id)
            with pytest.raises(RunTimeoutError):  # a client's own wait, told why it waits
                await lifecycle.wait_for_result(
                    run_id,
                    WaitForResultOptions(
                        interval_seconds=0.2, timeout_seconds=2, on_progress=snapshots.append
                    ),
                )
            async with httpx.AsyncClient(timeout=30) as raw:
                polled = await raw.get(
                    f"{server.url}/v1/runs/{run_id}/results",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            # The status clients loop on is unchanged: RUNNING, and 202 on the results read.
            assert status.status == RunStatus.RUNNING
            assert status.degraded
            assert status.degradation is not None
            assert (status.degradation.reason, status.degradation.message) == ("no_worker", said)
            assert snapshots, "wait_for_result delivered no progress snapshot"
            assert snapshots[-1].degradation is not None
            assert snapshots[-1].degradation.message == said
            assert said in snapshots[-1].summary
            assert polled.status_code == 202, polled.text
            assert polled.json()["degradation"]["message"] == said

            before = set(gate_dir.glob("entered-*"))
            worker = await start_worker(temporal_address, queue, gate_dir)
            key = await _entered(gate_dir, before)  # the run goes on, and waits at its gate
            # Within the server's window on Temporal's answers (3 s), the sentence is gone.
            async with asyncio.timeout(30):
                # The condition is another server's answer: there is no event to await.
                while (status := await lifecycle.get_run_status(run_id)).degraded:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            assert status.status == RunStatus.RUNNING
            assert status.degradation is None
            progress = await lifecycle.get_run_progress(run_id)
            assert progress.degradation is None
            assert ("shout", "running") in [(i.pipe_code, i.status) for i in progress.invocations]
            (gate_dir / f"open-{key}").touch()
            results = await lifecycle.wait_for_result(
                run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
            )
    finally:
        if worker is not None:
            await worker.stop()
        await server.stop()
    assert results.main_stuff["text"].startswith("passed: ")
