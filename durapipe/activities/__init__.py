"""The activities: llm and tool calls, error classification, heartbeats, checkpoints.

Activities never import workflow code.
"""

from durapipe.activities._activities import LLM_ACTIVITY, TOOL_ACTIVITY, Activities
from durapipe.activities._checkpoints import (
    CheckpointStore,
    RedisCheckpoints,
    SqliteCheckpoints,
    checkpoint_key,
    open_store,
)
from durapipe.activities._llm import run_llm
from durapipe.activities._tool import run_tool

__all__ = [
    "LLM_ACTIVITY",
    "TOOL_ACTIVITY",
    "Activities",
    "CheckpointStore",
    "RedisCheckpoints",
    "SqliteCheckpoints",
    "checkpoint_key",
    "open_store",
    "run_llm",
    "run_tool",
]
