"""The `brief` pipeline in Python: the twin of brief.yaml (both produce the same spec).

Run it with `durapipe run brief --file examples/brief.py --input-json '{"article": "..."}'`.
"""

from typing import Literal

from brief_tools import count_words
from pydantic import BaseModel, Field

import durapipe as dp


class Claim(BaseModel):
    """A factual claim made by the article."""

    text: str = Field(description="The claim, in one sentence.")
    importance: Literal["low", "medium", "high"] = Field(
        description="How central the claim is to the article."
    )


extract_claims = dp.llm(
    "extract_claims",
    model="fast",
    inputs={"article": str},
    system="You extract factual claims from news articles.",
    prompt="List the factual claims this article makes.\n\nArticle:\n{{ article }}\n",
    output=list[Claim],
    timeout="60s",
)

headline = dp.llm(
    "headline",
    model="fast",
    inputs={"article": str, "claims": list[Claim]},
    prompt=(
        "Write a headline of at most twelve words for this article.\n"
        "Its main claims are:\n"
        "{% for claim in claims %}- {{ claim.text }}\n{% endfor %}\n"
        "Article:\n{{ article }}\n"
    ),
)

verify = dp.llm(
    "verify",
    model="careful",
    inputs={"article": str, "claims": list[Claim], "word_count": int},
    prompt=(
        "The article below has {{ word_count }} words. For each claim, say whether the\n"
        "article supports it, then give an overall verdict in one sentence.\n"
        "{% for claim in claims %}- {{ claim.text }}\n{% endfor %}\n"
        "Article:\n{{ article }}\n"
    ),
    retry={"max_attempts": 3},
)

fact_check = dp.sequence(
    "fact_check",
    description="Count the words and judge whether the claims are supported.",
    inputs={"article": str, "claims": list[Claim]},
    steps=[dp.step(dp.tool(count_words), result="word_count"), dp.step(verify, result="verdict")],
    output=["word_count", "verdict"],
)

brief = dp.sequence(
    "brief",
    description="Extract the claims of an article, write a headline and fact-check it.",
    inputs={"article": str},
    steps=[
        dp.step(extract_claims, result="claims"),
        dp.step(headline, result="headline"),
        dp.step(fact_check, result="fact_check"),
    ],
    output={
        "claims": "claims",
        "headline": "headline",
        "word_count": "fact_check.word_count",
        "verdict": "fact_check.verdict",
    },
)

pipeline = dp.pipeline(
    brief,
    models={"fast": "durapipe/offline", "careful": "durapipe/offline"},
)
