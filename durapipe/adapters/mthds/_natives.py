"""MTHDS native concepts in durapipe's one model: the type each is, and the structures some bring.

The spec's natives map to durapipe types (Text -> text, Number -> number, Document -> document);
SearchResult and YesNo are structures that a pipeline gets when one of its pipes names the concept.
YesNo and Composite are natives Pipelex adds to the spec's (`_library.PIPELEX_NATIVES`).
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
# The structures native concepts bring, added to a pipeline when a pipe names their concept.
NATIVE_STRUCTURES = {
    "SearchResult": SEARCH_RESULT,
    "SearchSource": SEARCH_SOURCE,
    "YesNo": YES_NO,
}
_NEEDS = {"SearchResult": ("SearchResult", "SearchSource"), "YesNo": ("YesNo",)}


def structures_of(code: str) -> dict[str, StructureSpec]:
    """The structures native concept ``code`` needs in a pipeline (none for most natives)."""
    return {name: NATIVE_STRUCTURES[name] for name in _NEEDS.get(code, ())}
