"""Helpers the tests share: CLI and worker processes, history reading, waiting on conditions.

Test modules import helpers from here (or `tests.conftest` fixtures), never from each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from typer.testing import CliRunner

import durapipe as dp
from durapipe.activities import _activities
from durapipe.adapters import WORKFLOW_NAME
from durapipe.adapters._plan import STEPS_CAP_ACTIVITY
from durapipe.cli import app
from durapipe.client._stalls import QueuePollers
from durapipe.runtime import LlmCall
from durapipe.spec import LlmPipe, ModelDeck, ModelEntry
from durapipe.testing import FakeProvider
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
CONTROL = FIXTURES / "control.yaml"
T = TypeVar("T")


def summary_of(event: HistoryEvent) -> str:
    return str(json.loads(event.user_metadata.summary.data))


async def history_events(client: Client, workflow_id: str) -> list[HistoryEvent]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(history.events)


def scheduled_activities(events: list[HistoryEvent]) -> list[tuple[str, str, str]]:
    return [
        (
            e.activity_task_scheduled_event_attributes.activity_type.name,
            e.activity_task_scheduled_event_attributes.activity_id,
            summary_of(e),
        )
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def durapipe_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "durapipe", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **extra}
    env.pop("TEMPORAL_ADDRESS", None)
    return env


# How long a worker process may take to say "worker ready". Idle it takes 3-5 s; its imports
# (temporalio, durapipe, litellm) are CPU-bound, and on the 2-core CI machine with other suites and
# CPU hogs at load 18-22 they took over 60 s (the former deadline: "worker did not start" with an
# empty log or only its first line, 3 of 3 probes). A worker that exits is reported at once;
# this only bounds a hang.
WORKER_READY_S = 180.0


class WorkerProcess:
    """`durapipe worker FILE` as a child process, stopped by its own pid."""

    def __init__(
        self,
        file: Path,
        address: str,
        task_queue: str,
        log: Path,
        *args: str,
        **env: str,
    ) -> None:
        self.log = log
        self.task_queue = task_queue
        self.process = subprocess.Popen(
            durapipe_command(
                "worker", str(file), "--address", address, "--task-queue", task_queue, *args
            ),
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            env=cli_env(**env),
        )
        started = time.monotonic()
        while "worker ready" not in log.read_text(errors="replace"):
            waited = time.monotonic() - started
            if self.process.poll() is not None or waited > WORKER_READY_S:
                # Nobody stops a worker whose constructor raised: it outlived the suite (seen
                # at load 20-30, eight workers left polling).
                how = (
                    f"exited {self.process.returncode}"
                    if self.process.poll() is not None
                    else f"not ready in {waited:.0f} s (load average {os.getloadavg()[0]:.1f})"
                )
                self.kill()
                raise AssertionError(
                    f"worker did not start ({how}): {log.read_text(errors='replace')}"
                )
            time.sleep(0.1)

    async def polling(self, client: Client, timeout: float = 60) -> None:
        """Wait until the server lists this worker polling its task queue for workflow tasks.

        "worker ready" comes once its pollers started, before their first poll reaches the server:
        until it does, the server says no worker polls the queue (so does the stall check).
        """

        async def listed() -> bool:
            return await QueuePollers(client).gone(self.task_queue) is None

        await eventually(
            listed, f"the server to list a worker polling task queue '{self.task_queue}'", timeout
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def interruptible_popen(command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` of a child that Ctrl-C (SIGINT) reaches, as in a terminal.

    A suite started in the background (`nohup`, `&` in a script, a CI runner) runs with SIGINT
    ignored, and a child inherits an ignored signal: it then never sees the test's SIGINT (a Ctrl-C
    test of `run --local` finished its run and exited 0). Started from a handled SIGINT, the child
    gets the default.
    """
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, **kwargs)
    finally:
        signal.signal(signal.SIGINT, ignored)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        durapipe_command(*args),
        capture_output=True,
        text=True,
        env=cli_env(**(env or {})),
        timeout=120,
    )


async def wait_for_event(
    client: object, run_id: str, field: str, activity_id: str | None = None
) -> None:
    for _ in range(600):
        events = await history_events(client, run_id)  # type: ignore[arg-type]
        scheduled = {
            e.event_id: e.activity_task_scheduled_event_attributes.activity_id
            for e in events
            if e.HasField("activity_task_scheduled_event_attributes")
        }
        for event in events:
            if event.HasField(field):
                attrs = getattr(event, field)
                if activity_id is None or scheduled.get(attrs.scheduled_event_id) == activity_id:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{field} never appeared in {run_id}")


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str | Callable[[], str], timeout: float = 60
) -> T:
    """Poll ``check`` until it returns something, or fail naming ``what`` (a callable is asked
    then: it can say what the check saw last)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found is not None and found is not False:
            return found
        await asyncio.sleep(0.1)
    said = what if isinstance(what, str) else what()
    raise AssertionError(
        f"timed out after {timeout:g} s (load average {os.getloadavg()[0]:.1f}) waiting for {said}"
    )


async def until_waiting(handle: dp.RunHandle, timeout: float = 60) -> dp.RunHandle:
    """``handle`` once one of its steps waits for a decision. A `RunStalled` meanwhile is the
    server not yet listing a worker that just started polling (a loaded host): asked again."""

    async def waits() -> bool:
        try:
            return any(s.status == "waiting" for s in await handle.steps())
        except dp.RunStalled:
            return False

    await eventually(waits, f"a step of run '{handle.run_id}' to wait for a decision", timeout)
    return handle


def attempt_of(stuck: str) -> int:
    """The workflow task attempt a stall sentence names ("... is on attempt 3 on the ...")."""
    match = re.search(r" is on attempt (\d+) on ", stuck)
    assert match is not None, stuck
    return int(match[1])


async def acli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A control command in this process (a thread: it runs its own event loop); saves the
    start-up of a process per command on a busy machine."""
    argv = [*args, "--address", address]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv)
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def paid_pipeline(tmp_path: Path, base_url: str, model: str, steps: int, **extra: Any) -> Path:
    """A sequence of ``steps`` llm calls to the fake provider, as a YAML file."""
    call = {
        "kind": "llm",
        "model": f"openai/{model}",
        "inputs": {"topic": "text"},
        "prompt": "Say something about {{ topic }}.",
        "settings": {"max_tokens": 100},
        **extra,
    }
    pipes: dict[str, Any] = {
        "paid": {
            "kind": "sequence",
            "inputs": {"topic": "text"},
            "steps": [
                {"pipe": "call", "name": f"call{i}", "result": f"r{i}"} for i in range(1, steps + 1)
            ],
        },
        "call": call,
    }
    path = tmp_path / "paid.yaml"
    models = {"paid": {"model": f"openai/{model}", "api_base": base_url}}  # the worker's deck
    path.write_text(json.dumps({"models": models, "pipes": pipes}))  # JSON is YAML
    return path


def held_pipeline(pipe: str) -> dp.Pipeline:
    """A sequence ``pipe`` whose approval holds the run open after its first step (an llm step)."""
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}")
    review = dp.approval("review", inputs={"answer": str}, message="ok?", timeout="10m")
    return dp.pipeline(
        dp.sequence(
            pipe,
            inputs={"question": str},
            steps=[dp.step(ask, result="answer"), dp.step(review)],
        )
    )


def call_to(run_id: str = "r1") -> LlmCall:
    """One llm call to the model `deck_for` sends to a fake provider."""
    pipe = LlmPipe(model="openai/gpt-keep", prompt="Name a colour.")
    return LlmCall(run_id=run_id, path="colour", pipe_name="colour", pipe=pipe)


def deck_for(base_url: str) -> ModelDeck:
    """The worker's deck: the fake provider's endpoint comes from here, never from the pipe."""
    return ModelDeck.of({"keep": ModelEntry(model="openai/gpt-keep", api_base=base_url)})


def routed_pipeline(pipe: str, queue: str) -> str:
    """YAML of pipe ``pipe``: a sequence whose one llm step is routed to task queue ``queue``."""
    return f"""
pipes:
  {pipe}:
    kind: sequence
    inputs: {{topic: text}}
    steps:
      - pipe: draft
        result: post
    output: post
  draft:
    kind: llm
    inputs: {{topic: text}}
    prompt: "Write a one-line post about {{{{ topic }}}}."
    queue: {queue}
"""


async def raw_run_fails(
    client: Client, data: dict[str, Any], task_queue: str, timeout: float = 30
) -> tuple[WorkflowHandle[Any, Any], dp.StepFailed]:
    """Start a run's workflow from a raw input, as any temporalio client can, and the failure it
    ends with (the test fails if it ends another way, or not within ``timeout`` seconds)."""
    handle = await client.start_workflow(
        WORKFLOW_NAME, data, id=data["run_id"], task_queue=task_queue
    )
    try:
        await asyncio.wait_for(dp.RunHandle(client, handle.id).result(), timeout)
    except dp.StepFailed as failed:
        return handle, failed
    raise AssertionError(f"run {handle.id} did not fail")


async def raw_run_failure(address: str, data: dict[str, Any], task_queue: str) -> dp.StepFailed:
    """The failure a run started from a raw input ends with, on a worker of its own (see
    `raw_run_fails`)."""
    client = await Client.connect(address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue)
    return failure


# YAML fragments of a `pipes:` mapping for the run-size tests: `square` (n -> n*n), and `listed`,
# which makes the list 1..n (`count`) and hands it to a batch pipe `each` of the test's own.
SQUARE_TOOL = """
  square:
    kind: tool
    function: tests.control_tools:square
    inputs: {n: integer}
    output: integer
"""
# Batches squaring a list of numbers (with `SQUARE_TOOL`): 50 at a time, and in chunks of 10.
EACH_SQUARE = """
  each:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: square
    max_concurrency: 50
  each_in_chunks:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: square
    chunk_size: 10
"""
# A parallel of the batch `each` (with `EACH_SQUARE`, `SQUARE_TOOL`) beside three fixed branches
# of two squares each: a run of `wide` counts 10 steps when it starts, then one per number.
WIDE_BESIDE_FIXED = """
  wide:
    kind: parallel
    inputs: {numbers: 'list[integer]', n: integer}
    branches: {big: each, one: twice, two: twice, three: twice}
  twice:
    kind: sequence
    inputs: {n: integer}
    steps:
      - {pipe: square, result: first}
      - {pipe: square, result: second}
"""
# Two batches over lists the parallel holds: 150 and 20 items, 172 steps in all.
TWO_LISTS = (
    "pipes:"
    + EACH_SQUARE
    + SQUARE_TOOL
    + """
  two:
    kind: parallel
    inputs: {big: 'list[integer]', small: 'list[integer]'}
    branches:
      a: {pipe: each, inputs: {numbers: big}}
      b: {pipe: each, inputs: {numbers: small}}
"""
)
TWO_INPUTS = {"big": list(range(150)), "small": list(range(20))}
LISTED_BATCH = """
  listed:
    kind: sequence
    inputs: {n: integer}
    steps:
      - {pipe: count, result: numbers}
      - {pipe: each, result: squares}
  count:
    kind: tool
    function: tests.control_tools:count_to
    inputs: {n: integer}
    output: 'list[integer]'
"""


# `listed` (with `EACH_SQUARE`, `SQUARE_TOOL`): counts to n, then squares the numbers in a batch.
LISTED_PIPES = "pipes:" + EACH_SQUARE + LISTED_BATCH + SQUARE_TOOL


@contextlib.asynccontextmanager
async def listed_asking(
    address: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[dp.Client, dp.RunHandle, asyncio.Event, asyncio.Event]]:
    """A run of `listed` over 110 numbers on a worker of this process, which holds its answer to
    the step cap question the run asks mid-run (200): the client, the run, an event that releases
    the answer, and one set if the question is cancelled."""
    asking, release, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @activity.defn(name=STEPS_CAP_ACTIVITY)
    async def held(self: object) -> int:
        asking.set()
        try:
            # Bounded within its start-to-close timeout: a failing test leaves nothing behind.
            await asyncio.wait_for(release.wait(), timeout=25)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 200

    monkeypatch.setattr(_activities.Activities, "max_run_steps", held)
    pipeline = dp.load_yaml(LISTED_PIPES)
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=queue):
        run_id = f"listed-{uuid.uuid4().hex[:8]}"
        handle = await dp.start(
            client, pipeline, "listed", {"n": 110}, run_id=run_id, task_queue=queue
        )
        await asyncio.wait_for(asking.wait(), timeout=30)
        yield client, handle, release, cancelled


@contextlib.contextmanager
def priced_openai(prices: dict[str, tuple[float, float]]) -> Iterator[FakeProvider]:
    """A fake provider billing ``prices`` (``{model: (input, output) USD per token}``), as this
    process's OpenAI endpoint (``OPENAI_BASE_URL`` and a key, restored after) with its prices
    known to litellm: the paid calls of `openai/<model>` steps, their estimates and their costs."""
    with pytest.MonkeyPatch.context() as env, FakeProvider(prices=prices) as fake:
        env.setenv("OPENAI_BASE_URL", fake.base_url)
        env.setenv("OPENAI_API_KEY", "sk-fake")
        fake.register_prices_with_litellm()
        yield fake


def patch_markers(events: list[HistoryEvent]) -> list[str]:
    """The patches (`workflow.patched`) whose markers a run's history records, in order."""
    found = []
    for event in events:
        details = event.marker_recorded_event_attributes.details
        if "patch-data" in details:
            found.append(json.loads(details["patch-data"].payloads[0].data)["id"])
    return found


def local_activities(events: list[HistoryEvent]) -> list[str]:
    """The types of the local activities whose markers a run's history records, in order."""
    found = []
    for event in events:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity":
            found.append(json.loads(marker.details["data"].payloads[0].data)["activity_type"])
    return found


def started_as_version(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """Runs started from now on carry workflow version ``version``, as a client of the release that
    had it sends them (to record a run as the code before a change did)."""
    from durapipe.adapters import _plan

    monkeypatch.setattr(_plan, "WORKFLOW_VERSION", version)


async def run_or_failure(
    client: Client, pipeline: dp.Pipeline, pipe: str, inputs: dict[str, Any], queue: str
) -> tuple[str, dp.RunResult | dp.StepFailed]:
    """Run ``pipe`` on ``queue`` under a fresh run id: the id, and the result or the failure."""
    run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
    try:
        result: dp.RunResult | dp.StepFailed = await dp.run(
            client, pipeline, pipe, inputs, run_id=run_id, task_queue=queue
        )
    except dp.StepFailed as failed:
        result = failed
    return run_id, result


async def replays_clean(client: Client, run_id: str, histories: int | None = None) -> None:
    """Replay run ``run_id`` and its child runs (``histories`` of them in all, if given) against
    this code, as `durapipe replay` does: each must replay as it ran."""
    reports = await dp.ops.replay(await dp.ops.fetch_histories(client, run_id=run_id))
    assert reports, run_id
    assert histories is None or len(reports) == histories, (run_id, len(reports))
    for report in reports:
        assert (report.compatible, report.problem) == (True, None), run_id
