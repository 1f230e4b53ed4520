"""Issue 15, item 1: a client cannot make a worker send its provider key anywhere.

The worker owns connection settings (its environment and its pipelines' ``models:`` deck); a spec
sent by any client carries only generation settings, and the activity refuses the rest again.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

import durapipe as dp
from durapipe.adapters import WORKFLOW_NAME, pipe_run
from durapipe.testing import FakeProvider, Reply
from tests.support import cli_env, durapipe_command

WORKER_KEY = "sk-durapipe-WORKER-7e2b4f9a1c"
# What the worker loaded: a deck entry sends `gpt` to the provider the worker owner chose.
WORKER_PIPES = """
models:
  gpt:
    model: openai/fake-gpt
    api_base: "{url}"
pipes:
  summarize:
    kind: llm
    model: gpt
    inputs: {{text: text}}
    prompt: "Summarize: {{{{ text }}}}"
    settings: {{temperature: 0, max_tokens: 50}}
"""
# What the attacker sends: a pipe the worker never loaded, pointed at the attacker's listener.
ATTACKER_PIPES = """
pipes:
  exfil:
    kind: llm
    model: openai/fake-gpt
    inputs: {{text: text}}
    prompt: "{{{{ text }}}}"
    settings: {{api_base: "{url}"}}
    retry: {{max_attempts: 1}}
"""


@pytest.fixture
async def providers() -> AsyncIterator[tuple[FakeProvider, FakeProvider]]:
    """The worker's provider and the attacker's listener (it records every header it gets)."""
    async with FakeProvider() as provider, FakeProvider() as listener:
        yield provider, listener


async def test_a_client_cannot_point_a_worker_and_its_key_at_another_endpoint(
    providers: tuple[FakeProvider, FakeProvider],
    temporal_address: str,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, listener = providers
    monkeypatch.setenv("OPENAI_API_KEY", WORKER_KEY)
    provider.set_default(Reply(content="a summary"))
    worker_pipeline = dp.load_yaml(WORKER_PIPES.format(url=provider.base_url))
    worker_client = await dp.connect(temporal_address, pipeline=worker_pipeline)
    # The attacker has the namespace, not the key, and need not validate what it sends.
    attacker = dp.load_yaml(ATTACKER_PIPES.format(url=listener.base_url))
    attacker_client = await dp.connect(temporal_address, pipeline=attacker)
    async with dp.build_worker(worker_client, task_queue=task_queue):
        legit = await dp.run(
            attacker_client, worker_pipeline, "summarize", {"text": "x"}, task_queue=task_queue
        )
        with pytest.raises(dp.StepFailed) as failed:
            await dp.run(attacker_client, attacker, "exfil", {"text": "x"}, task_queue=task_queue)
    # Client-sent pipelines still work: the worker's deck routes `openai/fake-gpt` to its provider.
    assert legit.output == "a summary"
    assert [c.headers["Authorization"] for c in provider.calls] == [f"Bearer {WORKER_KEY}"]
    assert listener.calls == []
    assert failed.value.cause_type == "durapipe.SettingNotAllowed"
    assert "pipe 'exfil', field 'settings.api_base'" in failed.value.cause


@pytest.mark.parametrize(
    "setting",
    ["api_base", "base_url", "custom_llm_provider", "extra_headers", "callbacks", "api_key"],
)
def test_validate_names_the_pipe_and_field_of_a_connection_setting(
    setting: str, tmp_path: Path
) -> None:
    text = ATTACKER_PIPES.format(url="http://127.0.0.1:9/v1").replace("api_base", setting)
    (tmp_path / "attacker.yaml").write_text(text)
    done = subprocess.run(
        durapipe_command("validate", str(tmp_path / "attacker.yaml")),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"pipe 'exfil', field 'settings.{setting}'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_deck_entry_may_not_carry_credential_headers() -> None:
    text = WORKER_PIPES.format(url="http://gw/v1").replace(
        '    api_base: "http://gw/v1"', '    extra_headers: {Authorization: "Bearer sk-x"}'
    )
    with pytest.raises(dp.PipelineError) as raised:
        dp.validate(dp.load_yaml(text))
    problems = raised.value.problems
    assert [p.where for p in problems] == ["model alias 'gpt', field 'extra_headers.Authorization'"]


async def test_the_worker_refuses_the_setting_even_in_a_raw_workflow_input(
    temporal_address: str, task_queue: str, providers: tuple[FakeProvider, FakeProvider]
) -> None:
    _, listener = providers
    attacker = dp.load_yaml(ATTACKER_PIPES.format(url=listener.base_url))
    run = pipe_run(attacker, "exfil", {"text": "x"})
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            WORKFLOW_NAME, run, id=run.run_id, task_queue=task_queue
        )
        with pytest.raises(dp.StepFailed, match="SettingNotAllowed"):
            await dp.RunHandle(client, handle.id).result()
    assert listener.calls == []
