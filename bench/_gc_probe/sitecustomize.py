"""The cyclic garbage collector's CPU time in a bench worker process.

`bench.profile_ab` starts both workers with this folder on ``PYTHONPATH`` (Python imports
``sitecustomize`` at start) and ``BENCH_GC_PROBE`` naming a folder: each process then keeps, in
``<folder>/gc-<pid>``, the CPU seconds its collections took so far and how many ran, rewritten in
place after each collection. py-spy charges a collection to whatever frame happened to allocate
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
    _SPENT = [0.0, 0.0, 0.0]  # seconds so far, collections so far, this collection's start

    def _probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _SPENT[2] = time.thread_time()  # the collecting thread's CPU: the GIL is held
            return
        _SPENT[0] += time.thread_time() - _SPENT[2]
        _SPENT[1] += 1
        os.pwrite(_FD, f"{_SPENT[0]:.6f} {int(_SPENT[1])}".ljust(40).encode(), 0)

    gc.callbacks.append(_probe)
