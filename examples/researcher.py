"""The `researcher` agent in Python: the same spec as researcher.yaml (a test checks it)."""

from typing import Literal

from pydantic import BaseModel, Field
from research_tools import calculator, search

import durapipe as dp


class Finding(BaseModel):
    answer: str = Field(description="The answer, in one or two sentences.")
    sources: list[str] = Field(description="The passages the answer relies on.")
    confidence: Literal["low", "medium", "high"]


researcher = dp.agent(
    "researcher",
    model="fast",
    inputs={"question": str},
    instructions=(
        "You answer questions about the city. Use the search tool to find facts and the\n"
        "calculator for any arithmetic; never compute in your head.\n"
    ),
    prompt="{{ question }}",
    tools=[dp.tool(search), dp.tool(calculator, timeout="5s", retry={"max_attempts": 2})],
    output=Finding,
    max_turns=8,
    timeout="60s",
)
pipeline = dp.pipeline(researcher, models={"fast": "durapipe/offline"})
