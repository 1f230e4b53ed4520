"""A Python pipeline that feeds a parallel pipe's mapping output to an input declared as text."""

import durapipe as dp

summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize {{ article }}")
both = dp.parallel("both", inputs={"article": str}, branches={"short": summarize})
shout = dp.llm("shout", inputs={"text": str}, prompt="Shout {{ text }}")
main = dp.sequence(
    "main", inputs={"article": str}, steps=[both, dp.step(shout, inputs={"text": "both"})]
)
pipeline = dp.pipeline(main)
