"""A Python pipeline whose condition names a special outcome with a typo."""

import durapipe as dp

review = dp.llm("review", inputs={"amount": float}, prompt="Review {{ amount }}")
route = dp.condition(
    "route",
    inputs={"amount": float},
    expression="amount > 1000",
    outcomes={True: review, False: "contine"},  # type: ignore[dict-item]
)
pipeline = dp.pipeline(route)
