"""The engine-independent runtime: the interpreter that walks a spec, the controllers (batch,
condition, parallel), the agent loop, the budget and approvals.

`workflows/` hosts it on Temporal and `local.py` runs it in-process; it does no I/O of its own and
reaches the outside only through the `Runtime` protocol.
"""

from durapipe.runtime._interpret import Interpreter, Runtime
from durapipe.runtime._memory import join_path, lookup

__all__ = ["Interpreter", "Runtime", "join_path", "lookup"]
