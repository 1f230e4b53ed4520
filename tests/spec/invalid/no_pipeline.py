"""A Python pipeline file that forgot to define its pipeline."""

import durapipe as dp

summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize {{ article }}")
