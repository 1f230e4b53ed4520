"""A Python pipeline whose template reads a name it does not declare."""

import durapipe as dp

summarize = dp.llm(
    "summarize", inputs={"article": str}, prompt="Summarize {{ article }} for {{ audience }}"
)
pipeline = dp.pipeline(summarize)
