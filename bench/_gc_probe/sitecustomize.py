"""The cyclic garbage collector's CPU time in a bench worker process.

`bench.profile_ab` starts both workers with this folder on ``PYTHONPATH`` (Python imports
``sitecustomize`` at start) and ``BENCH_GC_PROBE`` naming a folder: each process then keeps, in
``<folder>/gc-<pid>``, the CPU seconds its collections took so far, how many ran and how many of
them were full (the oldest generation), rewritten in place after each collection. (Not the
frozen count: `gc.get_freeze_count` walks every frozen object, 30 ms in a durapipe worker.) py-spy charges a collection to whatever frame happened to allocate
when it began, so the profile reports collections from here instead.
"""

import gc
import os
import time

_FOLDER = os.environ.get("BENCH_GC_PROBE")

if _FOLDER:
    _FD = os.open(
        os.path.join(_FOLDER, f"gc-{os.getpid()}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
    )
    # Seconds so far, collections so far, full ones so far, this collection's start.
    _SPENT = [0.0, 0, 0, 0.0]

    def _probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _SPENT[3] = time.thread_time()  # the collecting thread's CPU: the GIL is held
            return
        _SPENT[0] += time.thread_time() - _SPENT[3]
        _SPENT[1] += 1
        _SPENT[2] += info["generation"] == 2
        line = f"{_SPENT[0]:.6f} {_SPENT[1]} {_SPENT[2]}"
        os.pwrite(_FD, line.ljust(64).encode(), 0)

    gc.callbacks.append(_probe)
