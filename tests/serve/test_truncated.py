"""`durapipe serve` says which steps' text answers were cut off at their output limit, as
`durapipe show` and `--json` do: extension members a client that does not know them passes by."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web
from mthds.runners.api.client import MthdsAPIClient

import durapipe as dp
from durapipe.serve import ServeConfig, create_app
from durapipe.serve._trust import Capabilities
from durapipe.testing import FakeProvider, Reply, Status
from tests.serve.conftest import TOKEN
from tests.support import priced_openai

METHOD = """
version: 1
pipes:
  prose:
    kind: llm
    model: openai/gpt-think
    inputs: {topic: text}
    prompt: "Write about {{ topic }}."
    settings: {max_tokens: 100}
"""
CUT = Reply(content="Alpha, Beta, Gam", finish_reason="length", completion_tokens=100)
REQUEST = {"pipe_code": "prose", "files": {"method.yaml": METHOD}, "inputs": {"topic": "x"}}
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai({"gpt-think": (1e-6, 1e-6)}) as fake:
        yield fake


@contextlib.asynccontextmanager
async def serving(address: str, task_queue: str) -> AsyncIterator[str]:
    """`durapipe serve`'s app on a free port of this process, a worker behind it; its URL."""
    client = await dp.connect(address)
    capabilities = Capabilities(models={"openai/gpt-think": "llm"})
    config = ServeConfig(token=TOKEN, capabilities=capabilities, task_queue=task_queue)
    runner = web.AppRunner(create_app(config, client), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with dp.build_worker(client, task_queue=task_queue):
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_cut_text_answer_is_marked_in_execute_results_and_progress(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    fake.script("gpt-think", [CUT, CUT, Reply(content="Alpha, Beta.")])
    async with serving(temporal_address, task_queue) as url:
        async with MthdsAPIClient(api_key=TOKEN, base_url=url) as mthds:
            executed = await mthds.execute(**REQUEST)
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as http:
            started = (await http.post("/v1/start", json=REQUEST)).json()["pipeline_run_id"]
            await (await dp.connect(temporal_address)).get_workflow_handle(started).result()
            results = (await http.get(f"/v1/runs/{started}/results")).json()
            progress = (await http.get(f"/v1/runs/{started}/progress")).json()
            whole = (await http.post("/v1/execute", json=REQUEST)).json()
            whole_id = whole["pipeline_run_id"]
            whole_results = (await http.get(f"/v1/runs/{whole_id}/results")).json()
            whole_progress = (await http.get(f"/v1/runs/{whole_id}/progress")).json()
    # The protocol's client reads the answer as before, the member riding its extras.
    assert executed.model_extra is not None
    assert executed.model_extra["truncated_steps"] == ["prose"]
    assert results["truncated_steps"] == ["prose"]
    assert results["main_stuff"] == {"text": CUT.content}  # kept as it was cut
    [step] = progress["invocations"]
    assert (step["path"], step["truncated"]) == ("prose", True)
    # A whole answer: the bodies keep the shape they had.
    assert "truncated_steps" not in whole and "truncated_steps" not in whole_results
    assert "truncated" not in whole_progress["invocations"][0]


# The method's prose, then a step that the provider refuses.
FAILING_METHOD = (
    METHOD
    + """  verdict:
    kind: llm
    model: openai/gpt-think
    inputs: {prose: text}
    prompt: "Judge {{ prose }}."
  judged:
    kind: sequence
    inputs: {topic: text}
    steps:
      - {pipe: prose, result: prose}
      - {pipe: verdict, result: verdict}
    output: verdict
"""
)
FAILING = {
    "pipe_code": "judged",
    "files": {"method.yaml": FAILING_METHOD},
    "inputs": {"topic": "x"},
}


async def test_a_failed_runs_problem_names_the_steps_cut_before_it_failed(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # The first step's answer is cut and kept, the second step is refused (401, not retried).
    fake.script("gpt-think", [CUT, Status(401), Reply(content="Alpha."), Status(401)])
    async with (
        serving(temporal_address, task_queue) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as http,
    ):
        executed = await http.post("/v1/execute", json=FAILING)
        run_id = executed.json()["pipeline_run_id"]
        results = await http.get(f"/v1/runs/{run_id}/results")
        status = (await http.get(f"/v1/runs/{run_id}/status")).json()
        whole = (await http.post("/v1/execute", json=FAILING)).json()
        whole_results = (await http.get(f"/v1/runs/{whole['pipeline_run_id']}/results")).json()
    assert executed.status_code == 409 and results.status_code == 409
    assert executed.json()["code"] == "run.failed"
    assert executed.json()["truncated_steps"] == ["prose"]
    assert results.json()["truncated_steps"] == ["prose"]
    assert status["error"]["truncated_steps"] == ["prose"]
    # A failed run with no cut answer: the problem keeps the shape it had.
    assert whole["code"] == "run.failed"
    assert "truncated_steps" not in whole and "truncated_steps" not in whole_results
