"""MTHDS native concepts in durapipe's one model: the type each is, and the structures some bring.

The spec's natives map to durapipe types (Text -> text, Number -> number, Document -> document);
SearchResult, YesNo, Choice and Rating are structures that a pipeline gets when one of its pipes
names the concept. YesNo, Choice, Rating and Composite are natives Pipelex adds to the spec's
(`_library.PIPELEX_NATIVES`); Choice and Rating are the verdicts of its PipeJudge (`_judge`).
"""

from __future__ import annotations

from durapipe.spec import StructureSpec

NATIVE_TYPES = {
    "Text": "text",
    "Html": "text",
    "ImgGenPrompt": "text",
    "Number": "number",
    "JSON": "any",
    "Dynamic": "any",
    "Anything": "any",
    "TextAndImages": "any",
    "Image": "image",
    "Document": "document",
    "Page": "Page",
    "SearchResult": "SearchResult",
    "YesNo": "YesNo",
    "Choice": "Choice",
    "Rating": "Rating",
    # Pipelex's CompositeContent: the branch results of a PipeParallel by name, no declared
    # structure (pipelex/core/stuffs/composite_content.py): what a parallel makes in durapipe.
    "Composite": "any",
}
SEARCH_RESULT = StructureSpec(
    description="A web search result with answer and sources.",
    fields={
        "answer": {"type": "text", "description": "The answer found on the web."},
        "sources": {"type": "list[SearchSource]", "description": "The pages the answer cites."},
    },
)
SEARCH_SOURCE = StructureSpec(
    description="A page a search answer cites.",
    fields={"title": {"type": "text"}, "url": {"type": "text"}},
)
# Pipelex's YesNoContent (Pipelex/pipelex pipelex/core/stuffs/yes_no_content.py): one strict
# boolean, `yes_no`.
YES_NO = StructureSpec(
    description="The answer to a yes/no question.",
    fields={
        "yes_no": {
            "type": "boolean",
            "description": "Whether the answer is yes (true) or no (false).",
        }
    },
)
# Pipelex's ChoiceContent and RatingContent (pipelex/core/stuffs/choice_content.py,
# rating_content.py): the verdict a judgment reports. Their confidence and distribution fields are
# filled only by a judging backend that measures them, and a model answering in text measures none
# (Pipelex leaves them out then too): durapipe has the verdict alone.
CHOICE = StructureSpec(
    description="One option picked out of a declared set.",
    fields={"choice": {"type": "text", "description": "The key of the selected option."}},
)
RATING = StructureSpec(
    description="A position on an ordered scale of described levels.",
    fields={
        "level": {
            "type": "integer",
            "description": "The index of the selected level, 0 being the first level declared.",
        }
    },
)
# The structures native concepts bring, added to a pipeline when a pipe names their concept.
NATIVE_STRUCTURES = {
    "SearchResult": SEARCH_RESULT,
    "SearchSource": SEARCH_SOURCE,
    "YesNo": YES_NO,
    "Choice": CHOICE,
    "Rating": RATING,
}
_NEEDS = {
    "SearchResult": ("SearchResult", "SearchSource"),
    "YesNo": ("YesNo",),
    "Choice": ("Choice",),
    "Rating": ("Rating",),
}


def structures_of(code: str) -> dict[str, StructureSpec]:
    """The structures native concept ``code`` needs in a pipeline (none for most natives)."""
    return {name: NATIVE_STRUCTURES[name] for name in _NEEDS.get(code, ())}
