"""In-process A/B timing of the activity path: exact CPU microseconds per call, alternating rounds.

On a busy machine wall-clock runs of a whole pipeline drift by more than the change being measured;
running two variants in one process, alternating round by round and comparing process CPU time,
lets both see the same machine. ``python -m bench.activity_ab`` (or ``make bench-activity``) times
the pieces every leaf activity runs, what one activity's UI summary costs the workflow side, and a
model call as the hand-written baseline and durapipe make it; `compare` is the helper to A/B a
change: put the old version of a function beside the new one and call
``compare({"old": ..., "new": ...})``. ``--http`` times a fan-out of model calls over http against
the fake provider (its own process) instead: hand-written (litellm's own transport), durapipe's
llm activity body (held connections, kept answers, checkpoints) and the same with checkpoints off.
``--against REV`` times the activity path's pieces of the package at git revision REV beside this
checkout's, alternating (REV's package is imported under another name).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm


def compare(
    variants: Mapping[str, Callable[[], object]], *, rounds: int = 7, calls: int = 2000
) -> dict[str, list[float]]:
    """CPU microseconds per call of each variant, one figure per round; the variants alternate
    within every round, so a machine that gets busier slows all of them alike."""
    for run in variants.values():  # warm caches and imports outside the timed rounds
        run()
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.process_time()
            for _ in range(calls):
                run()
            timings[name].append((time.process_time() - start) / calls * 1e6)
    return timings


def report(timings: Mapping[str, list[float]]) -> None:
    """Print each variant's median and every round's figure, in microseconds per call."""
    for name, rounds in timings.items():
        figures = " ".join(f"{value:.2f}" for value in rounds)
        print(f"{name:24s} median {statistics.median(rounds):9.2f} us/call  rounds: {figures}")


def _in_activity(run: Callable[[], object], meter: Any) -> Callable[[], object]:
    """``run`` inside an activity context whose worker meter is a real (Prometheus) meter."""
    from temporalio.testing import ActivityEnvironment

    environment = ActivityEnvironment()
    environment.metric_meter = meter
    return lambda: environment.run(run)


def _leaf_path(store: Path) -> Mapping[str, Callable[[], object]]:
    """A whole llm leaf and the per-leaf pieces: settings, usage metrics (beside the cost of
    entering an activity context, their floor), a checkpoint put+get, a kept answer put+get."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    from durapipe._settings import settings
    from durapipe.activities._metrics import record_usage
    from durapipe.runtime._calls import LeafResult, Usage
    from durapipe.stores import SqliteCheckpoints

    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address="127.0.0.1:0"))
    )
    result = LeafResult(
        output="an answer",
        usage=Usage(input_tokens=12, output_tokens=30, cost_usd=4e-5),
        model="openai/gpt-x",
    )
    checkpoints = SqliteCheckpoints(str(store))
    counter = iter(range(10**9))

    def checkpoint() -> None:
        key = f"run/step-{next(counter)}"
        checkpoints.put(key, result)
        checkpoints.get(key)

    return {
        "llm leaf (offline model)": _llm_leaf(checkpoints),
        "activity context only": _in_activity(lambda: None, runtime.metric_meter),
        "settings()": settings,
        "record_usage": _in_activity(lambda: record_usage(result, "llm"), runtime.metric_meter),
        "checkpoint put+get": checkpoint,
        "kept answer put+get": _kept_answer(checkpoints),
    }


def activity_pieces(
    package: str = "durapipe", loop: asyncio.AbstractEventLoop | None = None
) -> dict[str, Callable[[], object]]:
    """The llm activity as a worker runs it, and its per-leaf pieces, from ``package`` (durapipe,
    or a copy of another revision of it, see `package_at`).

    The activity is the one ``Activities.all()`` gives a worker (heartbeats with a 20 s heartbeat
    timeout, usage metrics on a real Prometheus meter, checkpoints off) on the offline model, in
    an activity context, a new call each time, its result converted to a payload; and the same
    with litellm's call replaced by a canned answer (the activity's own code, which litellm's
    milliseconds otherwise hide). Two packages timed together share one ``loop`` (litellm's
    logging worker belongs to one).
    """
    from temporalio import activity as temporal_activity
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
    from temporalio.testing import ActivityEnvironment

    def module(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    activities, spec = module("activities._activities"), module("spec")
    calls, metrics = module("runtime._calls"), module("activities._metrics")
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address="127.0.0.1:0"))
    )
    environment = ActivityEnvironment()
    environment.metric_meter = runtime.metric_meter
    environment.info = dataclasses.replace(
        environment.info, heartbeat_timeout=timedelta(seconds=20), activity_type="durapipe.llm"
    )
    [llm_activity] = [
        defined
        for defined in activities.Activities(checkpoints=None).all()
        if temporal_activity._Definition.must_from_callable(defined).name == "durapipe.llm"
    ]
    converter = pydantic_data_converter.payload_converter
    pipe = spec.LlmPipe(model="durapipe/offline", prompt="{{ question }}")
    result = calls.LeafResult(
        output="Offline answer: q1", usage=calls.Usage(input_tokens=1, output_tokens=4), model="m"
    )
    loop = loop or asyncio.new_event_loop()
    counter = iter(range(10**9))

    def leaf() -> None:
        i = next(counter)
        call = calls.LlmCall(
            run_id=f"ab-{i}", path=f"b[{i}]", pipe_name="ask", pipe=pipe, inputs={"question": "q"}
        )
        converter.to_payloads([loop.run_until_complete(environment.run(llm_activity, call))])

    llm = module("activities._llm")
    answer = _model_response()

    async def answered(model: str, *args: Any, **kwargs: Any) -> Any:
        for _ in range(3):  # a call over http resumes the activity's await chain a few times
            await asyncio.sleep(0)
        return answer

    def leaf_answered() -> None:
        # The activity's own code around the model call: litellm's replaced by a canned answer.
        real, llm.complete = llm.complete, answered
        try:
            leaf()
        finally:
            llm.complete = real

    async def done() -> None:
        return None

    async def heartbeating() -> None:
        for _ in range(100):
            await activities._heartbeating(done())

    def usage_metrics() -> None:
        for _ in range(100):
            metrics.record_usage(result, "llm")

    return {
        "llm activity, worker's": leaf,
        "llm activity, answered at once": leaf_answered,
        "result payload": lambda: converter.to_payloads([result]),
        "render {{ question }}": lambda: spec.render(
            "{{ question }}", {"question": "q"}, seconds=1.0
        ),
        # In one activity context, a hundred at a time: a context costs more than they do.
        "100 x _heartbeating": lambda: loop.run_until_complete(environment.run(heartbeating)),
        "100 x record_usage": lambda: environment.run(usage_metrics),
    }


def _model_response() -> Any:
    """A litellm response as the offline model gives it, priced (at 0) as litellm prices one."""
    import litellm

    response = litellm.ModelResponse(
        choices=[{"message": {"content": "Offline answer: q"}, "finish_reason": "stop"}],
        usage={"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
        model="durapipe/offline",
    )
    response._hidden_params = {"response_cost": 0.0}
    return response


def package_at(revision: str, folder: Path) -> str:
    """Import name of a copy of the durapipe package at git ``revision``, written under ``folder``
    with its imports renamed, so both versions can run in one process."""
    name = "durapipe_at_" + re.sub(r"\W", "_", revision)
    made = subprocess.run(
        ["git", "archive", revision, "durapipe"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
    )
    if made.returncode != 0:
        sys.exit(f"--against {revision}: git has no durapipe package at that revision")
    archive = made.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "durapipe").rename(folder / name)
    imports = re.compile(r"\b(from|import) durapipe\b")
    for source in (folder / name).rglob("*.py"):
        source.write_text(imports.sub(rf"\1 {name}", source.read_text()))
    sys.path.insert(0, str(folder))
    return name


def _llm_leaf(checkpoints: Any) -> Callable[[], object]:
    """A whole llm activity body (`run_llm`) on the offline model, a new checkpoint each call."""
    from durapipe.activities import run_llm
    from durapipe.runtime import LlmCall
    from durapipe.spec import LlmPipe

    pipe = LlmPipe(model="durapipe/offline", prompt="Name a colour.")
    loop = asyncio.new_event_loop()
    counter = iter(range(10**9))

    def leaf() -> None:
        call = LlmCall(run_id=f"ab-{next(counter)}", path="colour", pipe_name="colour", pipe=pipe)
        loop.run_until_complete(run_llm(call, 1, checkpoints))

    return leaf


def _kept_answer(checkpoints: Any) -> Callable[[], object]:
    """Keep a provider's answer and read it back, as the HTTP transport does (~1.2 KB of JSON)."""
    import httpx

    from durapipe.adapters._answers import _decode, _encode

    body = json.dumps({"choices": [{"message": {"content": "word " * 200}}]}).encode()
    request = httpx.Request("POST", "http://provider/v1/chat/completions")
    answer = httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    counter = iter(range(10**9))

    def keep_and_read() -> None:
        key = f"answer:{next(counter)}"
        checkpoints.put_answer(key, _encode(answer, body))
        kept = checkpoints.get_answer(key)
        assert _decode(kept, request).content == body

    return keep_and_read


def _summary_encode() -> Mapping[str, Callable[[], object]]:
    """The workflow side of one activity's UI summary: one schedule command built and encoded the
    way the SDK does it (payload conversion, then ``encode_completion``'s visits through durapipe's
    converter), with and without the summary durapipe sets (a plain string, ``llm path · model``)."""
    from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
    from temporalio.bridge.worker import encode_completion

    from durapipe.worker import durapipe_converter

    converter = durapipe_converter()
    payloads = converter.payload_converter
    argument = payloads.to_payload({"messages": [{"role": "user", "content": "word " * 40}]})
    loop = asyncio.new_event_loop()

    def schedule(summary: str | None) -> Callable[[], object]:
        def run() -> None:
            completion = WorkflowActivationCompletion(run_id="ab")
            command = completion.successful.commands.add()
            command.schedule_activity.seq = 1
            command.schedule_activity.activity_id = "ask[7]"
            command.schedule_activity.arguments.append(argument)
            if summary is not None:
                command.user_metadata.summary.CopyFrom(payloads.to_payload(summary))
            loop.run_until_complete(encode_completion(completion, converter, True, 1))

        return run

    return {
        "schedule, no summary": schedule(None),
        "schedule + summary": schedule("llm batch1000[7] · durapipe/offline"),
    }


def _litellm_call() -> Mapping[str, Callable[[], object]]:
    """One offline-model call as hand-written temporalio makes it and as durapipe's `complete`
    makes it (idempotency headers, span, classification); process time counts litellm's success
    logging and cost calculation, wherever it runs."""
    from durapipe.activities._llm import complete, idempotency_headers
    from durapipe.adapters._litellm import litellm_module
    from durapipe.adapters._offline import register_offline_model

    register_offline_model()
    litellm = litellm_module()
    messages = [{"role": "user", "content": "Summarise the council meeting in a few words."}]
    loop = asyncio.new_event_loop()
    settings = idempotency_headers({}, "k" * 64, 1)

    def hand_written() -> None:
        loop.run_until_complete(
            litellm.acompletion(
                model="durapipe/offline", messages=messages, num_retries=0, timeout=60.0
            )
        )

    def durapipe() -> None:
        loop.run_until_complete(complete("durapipe/offline", messages, None, settings, 60.0))

    return {"litellm call, hand-written": hand_written, "litellm call, durapipe": durapipe}


async def compare_rounds(
    variants: Mapping[str, Callable[[int], Awaitable[object]]],
    *,
    rounds: int,
    fan: int,
    gc_off: bool = False,
) -> dict[str, list[float]]:
    """CPU microseconds per call of each variant: per round, ``fan`` calls at once (``variant(i)``
    for each i), the variants alternating and their order rotating from round to round.

    With ``gc_off`` the garbage collector runs before each round and not within it: a full
    collection landing in one round moved it by up to a millisecond per call, ten times the
    differences measured here (the collector's own cost is then not counted, on either side).
    """
    for run in variants.values():  # warm connections, caches and imports outside the rounds
        await asyncio.gather(*(run(i) for i in range(fan)))
    timings: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for n in range(rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            if gc_off:
                gc.collect()
                gc.disable()
            try:
                start = time.process_time()
                await asyncio.gather(*(variants[name](i) for i in range(fan)))
                timings[name].append((time.process_time() - start) / fan * 1e6)
            finally:
                gc.enable()
    return timings


async def _http_fan_out(
    base_url: str, rounds: int, fan: int, gc_off: bool
) -> dict[str, list[float]]:
    """Model calls over http to the fake provider, ``fan`` at once: as the hand-written baseline
    makes them, as durapipe's llm activity body does, and that with checkpoints off (no kept
    answers either: litellm's own transport). The provider runs in its own process."""
    from durapipe.activities import run_llm
    from durapipe.adapters._answers import warm
    from durapipe.adapters._litellm import litellm_module, warm_provider_clients
    from durapipe.runtime import LlmCall
    from durapipe.spec import LlmPipe
    from durapipe.stores import SqliteCheckpoints

    os.environ["OPENAI_BASE_URL"] = base_url  # litellm and the openai SDK read it
    os.environ.setdefault("OPENAI_API_KEY", "sk-fake-ab")
    litellm = litellm_module()
    await warm_provider_clients()
    await warm()
    pipe = LlmPipe(model="openai/gpt-ab", prompt="{{ question }}")
    counter = iter(range(10**9))
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteCheckpoints(Path(folder) / "ab.sqlite")

        async def hand_written(i: int) -> object:
            messages = [{"role": "user", "content": f"q{i}"}]
            return await litellm.acompletion(
                model="openai/gpt-ab", messages=messages, num_retries=0, timeout=120.0
            )

        def durapipe(checkpoints: Any) -> Callable[[int], Awaitable[object]]:
            async def leaf(i: int) -> object:
                call = LlmCall(
                    run_id=f"ab-{next(counter)}",
                    path=f"fan[{i}]",
                    pipe_name="ask",
                    pipe=pipe,
                    inputs={"question": f"q{i}"},
                )
                return await run_llm(call, 1, checkpoints)

            return leaf

        variants = {
            "http, hand-written": hand_written,
            "http, durapipe": durapipe(store),
            "http, checkpoints off": durapipe(None),
        }
        return await compare_rounds(variants, rounds=rounds, fan=fan, gc_off=gc_off)


def main(argv: list[str] | None = None) -> None:
    """Time the per-leaf pieces of the activity path, alternating, and print us per call."""
    parser = argparse.ArgumentParser(prog="python -m bench.activity_ab", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant per round")
    parser.add_argument(
        "--http",
        type=int,
        metavar="FAN",
        help="time FAN model calls at once over http against the fake provider instead",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="time the activity path of the package at git revision REV beside this checkout's",
    )
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="with --http: collect garbage before each round, not within it (less noise)",
    )
    args = parser.parse_args(argv)
    if args.http:
        provider = subprocess.Popen(
            [sys.executable, "-m", "durapipe.testing.fake_provider", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert provider.stdout is not None
            base_url = provider.stdout.readline().removeprefix("listening on ").strip()
            timings = _http_fan_out(base_url, args.rounds, args.http, args.gc_off)
            report(asyncio.run(timings))
        finally:
            provider.terminate()
            provider.wait(timeout=20)
        return
    if args.against:
        with tempfile.TemporaryDirectory() as folder:
            loop = asyncio.new_event_loop()
            theirs = activity_pieces(package_at(args.against, Path(folder)), loop)
            ours = activity_pieces(loop=loop)
            for piece, run in ours.items():
                # The whole activity costs about a hundred pieces: fewer calls per round.
                calls = max(1, args.calls // 20) if piece.startswith("llm") else args.calls
                if piece.startswith("100 x"):
                    calls = max(1, args.calls // 100)
                pair = {f"{piece} @{args.against}": theirs[piece], f"{piece} (this)": run}
                report(compare(pair, rounds=args.rounds, calls=calls))
        return
    with tempfile.TemporaryDirectory() as folder:
        report(
            compare(_leaf_path(Path(folder) / "ab.sqlite"), rounds=args.rounds, calls=args.calls)
        )
        report(compare(activity_pieces(), rounds=args.rounds, calls=max(1, args.calls // 20)))
    report(compare(_summary_encode(), rounds=args.rounds, calls=args.calls))
    # A model call costs about a hundred times a leaf piece: fewer calls per round.
    report(compare(_litellm_call(), rounds=args.rounds, calls=max(1, args.calls // 20)))


if __name__ == "__main__":
    main()
