"""The engine-independent runtime: the wire messages (calls, results, step records), the interpreter
that walks a spec, the controllers (batch, condition, parallel), the agent loop, the budget and
approvals.

`workflows/` hosts it on Temporal and `local.py` runs it in-process; it does no I/O of its own and
reaches the outside only through the `Runtime` protocol; the controllers and the agent loop see the
interpreter through the `Host` protocol (so none of them imports another).
"""

from durapipe.runtime._calls import (
    AgentTurnCall,
    BatchSlice,
    CallBase,
    ExtractCall,
    ImageCall,
    LeafCall,
    LeafResult,
    LlmCall,
    PipeRun,
    RunResult,
    StepFailure,
    StepRecord,
    ToolCall,
    Usage,
)
from durapipe.runtime._host import Host, Runtime
from durapipe.runtime._interpret import Interpreter
from durapipe.runtime._memory import join_path, lookup

__all__ = [
    "AgentTurnCall",
    "BatchSlice",
    "CallBase",
    "ExtractCall",
    "Host",
    "ImageCall",
    "Interpreter",
    "LeafCall",
    "LeafResult",
    "LlmCall",
    "PipeRun",
    "RunResult",
    "Runtime",
    "StepFailure",
    "StepRecord",
    "ToolCall",
    "Usage",
    "join_path",
    "lookup",
]
