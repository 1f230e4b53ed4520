"""The activities: llm and tool calls, error classification, heartbeats.

Activities never import workflow code.
"""

from durapipe.activities._activities import LLM_ACTIVITY, TOOL_ACTIVITY, Activities
from durapipe.activities._cost import estimate_cost
from durapipe.activities._llm import run_llm
from durapipe.activities._tool import run_tool

__all__ = ["LLM_ACTIVITY", "TOOL_ACTIVITY", "Activities", "estimate_cost", "run_llm", "run_tool"]
