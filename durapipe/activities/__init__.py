"""The activities: llm and tool calls, error classification, heartbeats.

Activities never import workflow code.
"""

from durapipe.activities._activities import (
    AGENT_TURN_ACTIVITY,
    LLM_ACTIVITY,
    TOOL_ACTIVITY,
    Activities,
)
from durapipe.activities._agent import run_agent_turn
from durapipe.activities._llm import run_llm
from durapipe.activities._tool import run_tool

__all__ = [
    "AGENT_TURN_ACTIVITY",
    "LLM_ACTIVITY",
    "TOOL_ACTIVITY",
    "Activities",
    "run_agent_turn",
    "run_llm",
    "run_tool",
]
