"""The `research` pipeline in Python: the twin of research.yaml (both produce the same spec).

Run it with `durapipe run research --file examples/research.py --input article="..."`.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field
from research_tools import count_unsupported, find_evidence

import durapipe as dp


class Claim(BaseModel):
    """A factual claim made by the article."""

    text: str = Field(description="The claim, in one sentence.")


class Verdict(BaseModel):
    """Whether the evidence supports a claim."""

    supported: bool
    confidence: Literal["low", "medium", "high"]
    reason: str


extract_claims = dp.llm(
    "extract_claims",
    model="fast",
    inputs={"article": str},
    prompt="List the factual claims this article makes.\n\n{{ article }}\n",
    output=list[Claim],
)

judge = dp.llm(
    "judge",
    model="fast",
    inputs={"claim": Claim, "evidence": str},
    prompt=(
        "Does the evidence support the claim?\nClaim: {{ claim.text }}\nEvidence: {{ evidence }}\n"
    ),
    output=Verdict,
)

check_claim = dp.sequence(
    "check_claim",
    description="Find evidence for one claim and judge it.",
    inputs={"claim": Claim, "article": str},
    steps=[
        dp.step(dp.tool(find_evidence), result="evidence", inputs={"claim_text": "claim.text"}),
        dp.step(judge, result="verdict"),
        dp.bind("verdict.supported", result="supported"),
    ],
    output={"claim": "claim.text", "supported": "supported", "reason": "verdict.reason"},
)

check_claims = dp.batch(
    "check_claims",
    description="Check every claim, four at a time.",
    inputs={"claims": list[Claim], "article": str},
    over="claims",
    item="claim",
    pipe=check_claim,
    max_concurrency=4,
)

summarize_short = dp.llm(
    "summarize_short",
    model="fast",
    inputs={"article": str},
    prompt="Summarise in one sentence: {{ article }}",
)

summarize_detailed = dp.llm(
    "summarize_detailed",
    model="fast",
    inputs={"article": str, "checks": list[Any]},
    prompt=(
        "Summarise the article in a paragraph, noting which claims hold up.\n"
        "{% for check in checks %}- {{ check.claim }}: "
        "{{ 'supported' if check.supported else 'not supported' }}\n{% endfor %}\n"
        "{{ article }}\n"
    ),
)

summaries = dp.parallel(
    "summaries",
    inputs={"article": str, "checks": list[Any]},
    branches={"short": summarize_short, "detailed": summarize_detailed},
)

publish_note = dp.llm(
    "publish_note",
    model="fast",
    inputs={"summary": str},
    prompt="Write a one-line publication note for: {{ summary }}",
)

review_note = dp.llm(
    "review_note",
    model="fast",
    inputs={"summary": str, "unsupported": int},
    prompt="Ask an editor to review {{ unsupported }} unsupported claims in: {{ summary }}",
)

decide = dp.condition(
    "decide",
    description="Publish when every claim holds up, else send the summary for review.",
    inputs={"unsupported": int, "summary": str},
    expression="unsupported == 0",
    outcomes={True: publish_note, False: review_note},
)

research = dp.sequence(
    "research",
    description="Check the claims of an article, summarise it and decide whether it can go out.",
    inputs={"article": str},
    steps=[
        dp.step(extract_claims, result="claims"),
        dp.step(check_claims, result="checks"),
        dp.step(dp.tool(count_unsupported), result="unsupported"),
        summaries,
        dp.bind("summaries.short", result="summary"),
        dp.step(decide, result="decision"),
    ],
    output={
        "checks": "checks",
        "summaries": "summaries",
        "unsupported": "unsupported",
        "decision": "decision",
    },
)

pipeline = dp.pipeline(research, models={"fast": "durapipe/offline"})
