"""A Python pipeline whose output model holds itself."""

from __future__ import annotations

from pydantic import BaseModel

import durapipe as dp


class Comment(BaseModel):
    """A comment and its replies."""

    text: str
    replies: list[Comment]


thread = dp.llm(
    "thread", inputs={"topic": str}, prompt="A thread about {{ topic }}", output=Comment
)
pipeline = dp.pipeline(thread)
