"""The activities: llm, tool, extract, image and agent calls, the bodies of registered pipe
kinds, error classification, heartbeats. Their stores (checkpoints, provider limits) live in stores/.

Activities never import workflow code.
"""

from durapipe.activities._activities import (
    AGENT_TURN_ACTIVITY,
    EXTRACT_ACTIVITY,
    IMAGE_ACTIVITY,
    LLM_ACTIVITY,
    TOOL_ACTIVITY,
    Activities,
)
from durapipe.activities._agent import run_agent_turn
from durapipe.activities._cost import estimate_cost
from durapipe.activities._extract import local_pages, run_extract
from durapipe.activities._image import run_image
from durapipe.activities._llm import run_llm
from durapipe.activities._registry import (
    ActivityBody,
    CallContext,
    activity_body,
    register_activity,
    registered_activities,
    unregister_activity,
)
from durapipe.activities._tool import run_tool

__all__ = [
    "AGENT_TURN_ACTIVITY",
    "EXTRACT_ACTIVITY",
    "IMAGE_ACTIVITY",
    "LLM_ACTIVITY",
    "TOOL_ACTIVITY",
    "Activities",
    "ActivityBody",
    "CallContext",
    "activity_body",
    "estimate_cost",
    "local_pages",
    "register_activity",
    "registered_activities",
    "run_agent_turn",
    "run_extract",
    "run_image",
    "run_llm",
    "run_tool",
    "unregister_activity",
]
