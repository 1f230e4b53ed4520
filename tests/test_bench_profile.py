"""The profile harness sorts each py-spy sample into one area, by where its stack runs."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.profile_ab import (
    GC_PROBE,
    Collections,
    Libraries,
    Profile,
    area,
    frames,
    gc_spent,
    thread_cpu,
    thread_cpu_since,
)

LIBS = Libraries(
    durapipe="/src/durapipe/",
    bench="/src/bench/",
    model=("/venv/litellm/",),
    by_area=(("/venv/temporalio/", "temporalio"), ("/py/asyncio/", "event_loop")),
)
ENTRY = "main (/src/durapipe/cli/_app.py:10);run (/py/asyncio/runners.py:5)"
BASELINE_ENTRY = "<module> (/src/bench/handwritten.py:3);main (/src/bench/_serve.py:9);run (/py/asyncio/runners.py:5)"


def stack(*parts: str) -> str:
    return ";".join(parts)


def test_a_sample_inside_a_model_call_is_the_model_calls_whoever_called_it() -> None:
    ours = stack(
        ENTRY,
        "_ask (/src/durapipe/activities/_llm.py:1)",
        "acompletion (/venv/litellm/main.py:2)",
        "x (/py/asyncio/events.py:3)",
    )
    theirs = stack(
        BASELINE_ENTRY, "ask (/src/bench/handwritten.py:4)", "acompletion (/venv/litellm/main.py:2)"
    )
    offline = stack(ENTRY, "acompletion (/src/durapipe/adapters/_offline.py:5)")
    assert area(frames(ours), LIBS) == "model_call"
    assert area(frames(theirs), LIBS) == "model_call"
    assert area(frames(offline), LIBS) == "model_call"
    # The checkpoint wrapper around the call does not make the provider's work the store's.
    wrapped = stack(
        ENTRY,
        "checkpointed (/src/durapipe/stores/_checkpoints.py:1)",
        "complete (/src/durapipe/activities/_llm.py:2)",
        "acompletion (/venv/litellm/main.py:3)",
    )
    assert area(frames(wrapped), LIBS) == "model_call"


def test_the_code_that_asked_for_the_work_owns_it_not_the_worker_entry() -> None:
    key = stack(
        ENTRY,
        "run (/src/durapipe/activities/_activities.py:1)",
        "checkpoint_key (/src/durapipe/stores/_checkpoints.py:2)",
        "dumps (/py/json/__init__.py:3)",
    )
    workflow = stack(
        ENTRY,
        "step (/src/durapipe/runtime/_interpret.py:1)",
        "execute_activity (/venv/temporalio/workflow.py:2)",
    )
    entry_only = stack(ENTRY, "poll (/venv/temporalio/worker/_activity.py:1)")
    assert area(frames(key), LIBS) == "checkpoints"
    assert area(frames(workflow), LIBS) == "workflow"
    assert area(frames(entry_only), LIBS) == "temporalio"  # the CLI frames are every stack's root
    baseline = stack(
        BASELINE_ENTRY,
        "one (/src/bench/handwritten.py:5)",
        "execute_activity (/venv/temporalio/workflow.py:2)",
    )
    assert area(frames(baseline), LIBS) == "baseline_code"
    assert (
        area(frames(stack(BASELINE_ENTRY, "x (/py/asyncio/base_events.py:1)")), LIBS)
        == "event_loop"
    )
    # The bench workers' shared entry (bench/_serve.py) is no side's code either.
    serving = stack(
        BASELINE_ENTRY, "serve (/src/bench/_serve.py:20)", "x (/venv/temporalio/a.py:1)"
    )
    assert area(frames(serving), LIBS) == "temporalio"


def test_samples_without_python_frames_or_outside_known_libraries() -> None:
    assert area(frames(""), LIBS) == "native"
    assert area(frames(stack(ENTRY, "f (<frozen os>:1)")), LIBS) == "other"
    # The collections probe runs in both workers: it is neither side's code.
    probe = stack(BASELINE_ENTRY, "_probe (/src/bench/_gc_probe/sitecustomize.py:3)")
    assert area(frames(probe), LIBS) == "gc_probe"


def test_a_profile_counts_samples_by_area_and_durapipe_function() -> None:
    profile = Profile()
    raw = [
        stack(ENTRY, "checkpoint_key (/src/durapipe/stores/_checkpoints.py:2)") + " 7\n",
        stack(
            ENTRY,
            "checkpoint_key (/src/durapipe/stores/_checkpoints.py:9)",
            "dumps (/py/json/x.py:1)",
        )
        + " 3\n",
        stack(
            ENTRY,
            "_ask (/src/durapipe/activities/_llm.py:1)",
            "acompletion (/venv/litellm/main.py:2)",
        )
        + " 5\n",
        "garbage line without a count\n",
    ]
    profile.add(raw, LIBS)
    assert profile.areas == collections.Counter({"checkpoints": 10, "model_call": 5})
    assert profile.samples == 15
    # Model calls are litellm's work, not durapipe's: no durapipe function is charged with them.
    assert profile.functions == collections.Counter(
        {"checkpoint_key (durapipe/stores/_checkpoints.py)": 10}
    )


def test_the_probe_reports_each_workers_collections(tmp_path: Path) -> None:
    code = "import gc, os\nfor _ in range(5): gc.collect()\nprint(os.getpid())"
    env = {**os.environ, "PYTHONPATH": str(GC_PROBE), "BENCH_GC_PROBE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    spent = gc_spent(tmp_path, int(done.stdout))
    assert spent.count >= 5
    assert spent.full >= 5  # gc.collect() is a full collection
    assert spent.seconds > 0
    assert gc_spent(tmp_path, 1) == Collections(0.0, 0, 0)  # a process that reported nothing


def test_thread_cpu_charges_each_threads_work_to_it_user_and_system_apart() -> None:
    """The worker's threads' CPU is read from /proc: work on the main thread is ``main``'s, work
    on another thread is not, and user time is not counted as system time."""

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:  # a clock read is a system call: few of them
            sum(range(100_000))

    before = thread_cpu(os.getpid())
    burn(0.3)
    middle = thread_cpu(os.getpid())
    burnt, done = threading.Event(), threading.Event()

    def other() -> None:
        burn(0.3)
        burnt.set()
        done.wait()

    worker = threading.Thread(target=other)
    worker.start()
    try:
        assert burnt.wait(60)
        after = thread_cpu(os.getpid())
    finally:
        done.set()
        worker.join()
    first, second = thread_cpu_since(before, middle), thread_cpu_since(middle, after)
    assert first["main user"] >= 0.2
    assert first["main system"] < 0.1
    assert second["main user"] < 0.1
    others = sum(v for k, v in second.items() if k.endswith(" user") and k != "main user")
    assert others >= 0.2
    # The other thread has ended: from `after` to now it counts nothing, not minus its CPU.
    assert all(v >= 0 for v in thread_cpu_since(after, thread_cpu(os.getpid())).values())
