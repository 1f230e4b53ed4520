"""A Python pipeline whose builder call has a field out of range."""

import durapipe as dp

summarize = dp.llm(
    "summarize",
    inputs={"article": str},
    prompt="Summarize {{ article }}",
    retry={"max_attempts": 0},
)
pipeline = dp.pipeline(summarize)
