"""A Python pipeline whose batch maps over a text, not a list."""

import durapipe as dp

shout = dp.llm("shout", inputs={"word": str}, prompt="Shout {{ word }}")
shout_all = dp.batch("shout_all", inputs={"article": str}, over="article", item="word", pipe=shout)
pipeline = dp.pipeline(shout_all)
