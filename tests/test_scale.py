"""Scale features on the real dev server: routing to task queues and large payloads (claim check)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.spec import ModelEntry
from durapipe.stores._payloads import STORE_ENV, THRESHOLD_ENV, parse_size
from durapipe.testing.fake_provider import FakeProvider, Reply
from tests import scale_tools
from tests.support import history_events

ROUTED = dp.load_yaml(
    """
routing:
  - model: "openai/*"
    queue: llm-openai
  - provider: durapipe
    queue: llm-offline
  - kind: tool
    queue: tools
pipes:
  main:
    kind: sequence
    inputs: {text: text}
    steps: [{pipe: ask}, {pipe: pinned}, {pipe: remote}, {pipe: shout}]
  ask: {kind: llm, model: durapipe/offline, inputs: {text: text}, prompt: "{{ text }}"}
  pinned: {kind: llm, queue: special, inputs: {text: text}, prompt: "{{ text }}"}
  remote: {kind: llm, model: openai/gpt-x, inputs: {text: text}, prompt: "{{ text }}"}
  shout: {kind: tool, function: "flaky_tools:shout", inputs: {text: text}, output: text}
"""
)


def test_routing_rules_give_every_leaf_a_concrete_queue_and_a_pipes_own_queue_wins() -> None:
    spec = dp.resolve(ROUTED, "main")
    queues = {name: pipe.queue for name, pipe in spec.pipes.items()}
    assert queues == {
        "main": None,
        "ask": "llm-offline",
        "pinned": "special",
        "remote": "llm-openai",
        "shout": "tools",
    }
    assert spec.routing == []  # applied, not carried: the history shows concrete queues


def test_routing_looks_at_the_model_of_ocr_and_image_pipes_too() -> None:
    pipeline = dp.load_yaml("""
routing:
  - {provider: openai, queue: llm-openai}
  - {provider: mistral, queue: ocr-mistral}
pipes:
  main: {kind: sequence, steps: [{pipe: draw}, {pipe: read}, {pipe: local}, {pipe: cheap}]}
  draw: {kind: image, prompt: a cat, model: openai/dall-e-3, fallbacks: [mistral/pixtral]}
  read: {kind: extract, inputs: {doc: document}, model: mistral/mistral-ocr-latest}
  local: {kind: extract, inputs: {doc: document}, fallbacks: [openai/gpt-4o]}
  cheap: {kind: llm, model: durapipe/offline, fallbacks: [openai/gpt-4o], prompt: hi}
""")
    spec = dp.resolve(pipeline, "main")
    # By the model a leaf asks first: a leaf runs on one queue, whichever model answers.
    assert {name: pipe.queue for name, pipe in spec.pipes.items()} == {
        "main": None,
        "draw": "llm-openai",
        "read": "ocr-mistral",
        "local": None,
        "cheap": None,
    }


def test_routing_sends_an_agents_turns_by_its_model() -> None:
    # An agent is a workflow whose model requests are activities on the agent pipe's queue: the
    # README says routing rules look at an agent's model, so its pipe gets the matching queue.
    pipeline = dp.load_yaml("""
routing:
  - {provider: openai, queue: llm-openai}
  - {kind: tool, queue: tools}
pipes:
  main: {kind: sequence, steps: [{pipe: helper}, {pipe: pinned}]}
  look: {kind: tool, function: "m:f"}
  helper: {kind: agent, model: openai/gpt-4o, tools: [look], prompt: hi}
  pinned: {kind: agent, model: openai/gpt-4o, queue: special, prompt: hi}
""")
    spec = dp.resolve(pipeline, "main")
    assert {name: pipe.queue for name, pipe in spec.pipes.items()} == {
        "main": None,
        "helper": "llm-openai",
        "pinned": "special",
        "look": "tools",
    }


def test_a_routing_rule_without_a_criterion_is_a_pipeline_problem() -> None:
    with pytest.raises(dp.PipelineError, match="needs kind, provider or model"):
        dp.load_yaml("routing:\n  - queue: q\npipes: {}\n")


def test_payload_threshold_sizes() -> None:
    assert parse_size("262144") == parse_size("256KiB") == parse_size("256k") == 256 * 1024
    with pytest.raises(dp.ConfigError, match=THRESHOLD_ENV):
        parse_size("lots")


async def test_routed_leaves_run_on_their_queues_served_by_activity_workers(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.pipeline(
        dp.sequence(
            "main",
            steps=[
                dp.llm("ask", inputs={"text": str}, prompt="{{ text }}"),
                dp.tool(scale_tools.measure),
            ],
            inputs={"text": str},
        ),
        routing=[
            dp.RouteRule(provider="durapipe", queue=f"{task_queue}-llm"),
            dp.RouteRule(kind="tool", queue=f"{task_queue}-tools"),
        ],
    )
    client = await dp.connect(temporal_address, pipeline=pipeline)
    queues = [task_queue, f"{task_queue}-llm", f"{task_queue}-tools"]
    run_id = f"routed-{uuid.uuid4().hex[:8]}"
    workers = dp.build_workers(client, queues, max_concurrent_activities=2, rate=50)
    async with workers[0], workers[1], workers[2]:
        result = await dp.run(
            client, pipeline, "main", {"text": "hello"}, run_id=run_id, task_queue=task_queue
        )
    assert result.output == len("hello")
    scheduled = [
        (
            e.activity_task_scheduled_event_attributes.activity_id,
            e.activity_task_scheduled_event_attributes.task_queue.name,
        )
        for e in await history_events(client, run_id)
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == [("ask", f"{task_queue}-llm"), ("measure", f"{task_queue}-tools")]


async def test_an_agents_turns_run_on_the_queue_its_model_is_routed_to(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.pipeline(
        dp.agent("helper", inputs={"text": str}, prompt="{{ text }}", model="durapipe/offline"),
        routing=[dp.RouteRule(provider="durapipe", queue=f"{task_queue}-llm")],
    )
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"routed-agent-{uuid.uuid4().hex[:8]}"
    workers = dp.build_workers(client, [task_queue, f"{task_queue}-llm"])
    async with workers[0], workers[1]:
        await dp.run(
            client, pipeline, "helper", {"text": "hello"}, run_id=run_id, task_queue=task_queue
        )
    turns = [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in await history_events(client, run_id)
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert turns and set(turns) == {f"{task_queue}-llm"}


async def test_a_20mb_document_and_a_5mb_answer_complete_and_history_holds_references_only(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold = 128 * 1024
    store = tmp_path / "payloads"
    monkeypatch.setenv(STORE_ENV, str(store))
    monkeypatch.setenv(THRESHOLD_ENV, str(threshold))
    document = "lorem ipsum dolor sit amet " * (20 * 1024 * 1024 // 27)
    answer = "x" * (5 * 1024 * 1024)
    with FakeProvider() as fake:
        fake.set_default(Reply(content=answer))
        write = dp.llm(
            "write",
            model="openai/big",
            inputs={"size": int},
            prompt="Write a very long report about a document of {{ size }} characters.",
        )
        pipeline = dp.pipeline(
            dp.sequence(
                "report",
                steps=[dp.tool(scale_tools.measure), dp.step(write, inputs={"size": "measure"})],
                inputs={"text": str},
                output={"size": "measure", "report": "write"},
            ),
            models={"big": ModelEntry(model="openai/big", api_base=fake.base_url)},
        )
        client = await dp.connect(temporal_address, pipeline=pipeline)
        run_id = f"big-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=task_queue):
            result = await dp.run(
                client, pipeline, "report", {"text": document}, run_id=run_id, task_queue=task_queue
            )
    assert result.output["size"] == len(document)
    assert result.output["report"] == answer
    assert len(list(store.iterdir())) >= 3  # the run's input, the tool's input, the answer
    events = await history_events(client, run_id)
    largest = max(event.ByteSize() for event in events)
    assert largest <= threshold, f"a history event carries {largest} bytes"
