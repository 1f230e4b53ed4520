"""The idle bench charges each thread's CPU to its name, and knows which thread is the interpreter's."""

from __future__ import annotations

import os
import threading
import time

from bench.idle_cpu import spent, thread_times


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(100_000))


def test_spent_charges_work_to_the_thread_that_did_it_and_counts_the_main_threads_runs() -> None:
    burnt, done, measured = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        burnt.wait()
        burn(0.2)
        done.set()
        measured.wait()  # alive until read: an ended thread's task leaves /proc with its time

    helper = threading.Thread(target=other, name="idle-test-burner")
    helper.start()
    before = thread_times(os.getpid())
    burn(0.1)
    burnt.set()
    done.wait()
    after = thread_times(os.getpid())
    measured.set()
    helper.join()
    by_name, main_runs = spent(before, after)
    # Linux names a Python thread after its process ("python"), whatever its Python name.
    [other_name] = {name for tid, (name, _, _) in after.items() if tid == helper.native_id}
    assert other_name != "main"
    assert 90 <= by_name["main"] < 200
    # Other threads of that name may have run too: the helper's work is there, not in main's.
    assert by_name[other_name] >= 190
    assert main_runs >= 1
