"""``python -m bench.durapipe_worker SECONDS worker FILE ...``: ``durapipe worker FILE ...`` whose
Temporal runtime sends a worker heartbeat every ``SECONDS`` (``off``: none) instead of durapipe's 5 s.

A counted batch lasts minutes under valgrind (`bench.worker_instructions`), so durapipe's 5 s
worker heartbeats, each a gRPC request through a fresh deflate state, fall on its counted steps at
a rate a real run never sees; the baselines keep temporalio's default, 60 s. This sets the
interval the worker's runtime is built with (`durapipe.client._telemetry.WORKER_HEARTBEAT`, read
when the runtime is made) before the command runs; nothing else changes.
"""

from __future__ import annotations

import sys
from datetime import timedelta


def main() -> None:
    from durapipe.client import _telemetry
    from durapipe_entry import main as durapipe

    interval = sys.argv[1]
    _telemetry.WORKER_HEARTBEAT = None if interval == "off" else timedelta(seconds=float(interval))  # type: ignore[assignment]
    sys.argv = ["durapipe", *sys.argv[2:]]
    durapipe()


if __name__ == "__main__":
    main()
