"""A loaded set of bundles (a package, or one standalone bundle) and MTHDS reference resolution.

References follow the spec's namespace rules: a bare code resolves in the current bundle, then its
domain; ``domain.code`` in the named domain of the current package; ``alias->domain.code`` in the
named domain of the dependency ``alias`` (and, for pipes, only when that package exports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from durapipe._errors import Problem
from durapipe.adapters.mthds._bundle import Bundle, ConceptBlueprint, PipeBlueprint
from durapipe.adapters.mthds._installed import address_key, is_address
from durapipe.spec._names import suggest

NATIVE_CONCEPTS = frozenset(
    {
        "Dynamic",
        "Text",
        "Image",
        "Document",
        "Html",
        "TextAndImages",
        "Number",
        "ImgGenPrompt",
        "Page",
        "JSON",
        "SearchResult",
        "Anything",
    }
)
# Native concept codes of Pipelex releases (and Pipelex-only natives) seen in public bundles, read
# as the MTHDS native with the same meaning. `YesNo` is not here: boolean or text is ambiguous.
LEGACY_NATIVES = {
    "PDF": "Document",
    "LlmPrompt": "Text",
    "TextAndImage": "TextAndImages",
    "Markdown": "Text",
    "Date": "Text",
}
# Native concepts Pipelex adds to the spec's, with no MTHDS equivalent: each has a fixed meaning in
# durapipe's one model (`_natives`). A bundle may still declare its own
# concept with the code, which then wins, as Pipelex's own natives are only reached unqualified.
PIPELEX_NATIVES = frozenset({"YesNo", "Choice", "Rating", "Composite"})
RESERVED_DOMAINS = frozenset({"native", "mthds", "pipelex"})
_MULTIPLICITY = re.compile(r"^(?P<ref>[^\[\]]+?)(?:\[(?P<count>\d*)\])?$")


@dataclass
class Library:
    """The bundles of one package and the packages it depends on.

    Attributes:
        alias: ``""`` for the package being run, the dependency alias for a dependency.
        bundles: every bundle of the package.
        deps: dependency alias -> its library (the manifest's ``[dependencies]``).
        exports: ``(domain, pipe code)`` pairs the package exports; None for a standalone bundle
            (every pipe public).
        main_pipe: the manifest's main pipe, if any.
        address: the manifest's package address (``""`` without a manifest).
        name: the manifest's package name, if any.
        version: the manifest's package version, if any.
        by_address: package address before ``->``, with its ``@tag`` (see `address_key`) -> the
            library it names
            (a declared dependency or an installed method: `_installed`).
        unresolved: package address -> why it names no package here (one sentence).
        notes: what the manifest says that durapipe reads but that does nothing (one note each).
    """

    alias: str = ""
    bundles: list[Bundle] = field(default_factory=list)
    deps: dict[str, Library] = field(default_factory=dict)
    exports: set[tuple[str, str]] | None = None
    main_pipe: str | None = None
    address: str = ""
    name: str = ""
    version: str = ""
    by_address: dict[str, Library] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)
    notes: list[Problem] = field(default_factory=list)

    def dependencies(self) -> list[Library]:
        """Every package this one uses, each once: declared ones and those named by address."""
        found: dict[int, Library] = {}
        for dep in [*self.deps.values(), *self.by_address.values()]:
            found.setdefault(id(dep), dep)
        return list(found.values())

    def pipe(self, domain: str, code: str) -> tuple[Bundle, PipeBlueprint] | None:
        """The pipe ``code`` of ``domain`` in this package, with its bundle."""
        for bundle in self.bundles:
            if bundle.domain == domain and code in bundle.pipes:
                return bundle, bundle.pipes[code]
        return None

    def concept(self, domain: str, code: str) -> tuple[Bundle, ConceptBlueprint] | None:
        """The concept ``code`` of ``domain`` in this package, with its bundle."""
        for bundle in self.bundles:
            if bundle.domain == domain and code in bundle.concepts:
                return bundle, bundle.concepts[code]
        return None

    def exported(self, domain: str, code: str) -> bool:
        """Whether pipe ``code`` of ``domain`` may be used from outside the package."""
        return self.exports is None or (domain, code) in self.exports


@dataclass(frozen=True)
class PipeTarget:
    """Where a pipe reference resolved to."""

    library: Library
    bundle: Bundle
    code: str

    @property
    def blueprint(self) -> PipeBlueprint:
        """The referenced pipe's blueprint."""
        return self.bundle.pipes[self.code]


@dataclass(frozen=True)
class ConceptTarget:
    """Where a concept reference resolved to: a native concept (no bundle) or a declared one."""

    code: str
    library: Library | None = None
    bundle: Bundle | None = None

    @property
    def native(self) -> bool:
        """Whether this is one of the spec's native concepts."""
        return self.bundle is None


def split_multiplicity(ref: str) -> tuple[str, int | None, bool]:
    """``("Topic", 3, True)`` from ``Topic[3]``, ``("Topic", None, True)`` from ``Topic[]``
    (a presence marker after it, ``?`` or ``!``, is left out: see `is_optional`).

    Raises:
        ValueError: the brackets are malformed or the count is not at least 1.
    """
    # Pipelex's presence markers (`Concept?` optional, `Concept!` forced) say whether a value must
    # be there, not what it is: `is_optional` reads them.
    match = _MULTIPLICITY.match(ref.strip().removesuffix("?").removesuffix("!"))
    if match is None:
        raise ValueError(
            f"'{ref}' is not a concept reference (use Concept, Concept[] or Concept[N])"
        )
    count = match.group("count")
    if count is None:
        return match.group("ref"), None, False
    if count == "":
        return match.group("ref"), None, True
    if int(count) < 1:
        raise ValueError(f"'{ref}': a fixed list needs at least 1 item")
    return match.group("ref"), int(count), True


def is_optional(ref: str) -> bool:
    """Whether input reference ``ref`` carries Pipelex's optional marker (``Concept?``,
    ``Concept[]?``): a run may leave the input out, and the pipe then reads null. ``!`` (forced)
    is a plain, required input, as in Pipelex."""
    return ref.strip().endswith("?")


def _dependency(library: Library, ref: str) -> tuple[str, Library, str, str] | str:
    """``(alias, dependency, domain, code)`` of an ``alias->domain.code`` reference, or why not."""
    alias, _, rest = ref.partition("->")
    if is_address(alias):
        # Pipelex's methods repository writes the package address itself before `->` (the spec
        # resolves only an alias from [dependencies]): found among installed methods, never fetched.
        key = address_key(alias)
        dep = library.by_address.get(key)
        if dep is None:
            return library.unresolved.get(key, f"package '{alias}' is not loaded")
        domain, _, code = rest.rpartition(".")
        return alias, dep, domain, code
    dep = library.deps.get(alias)
    if dep is None:
        known = ", ".join(sorted(library.deps)) or "none declared"
        return f"'{alias}' is not a dependency alias of this package (dependencies: {known})"
    domain, _, code = rest.rpartition(".")
    return alias, dep, domain, code


def resolve_pipe(library: Library, bundle: Bundle, ref: str) -> PipeTarget | str:
    """The pipe ``ref`` names from ``bundle``, or one sentence saying why it does not resolve."""
    if "->" in ref:
        named = _dependency(library, ref)
        if isinstance(named, str):
            return named
        alias, dep, domain, code = named
        if not domain:
            return f"'{ref}' must name the domain: '{alias}->domain.{code}'"
        found = dep.pipe(domain, code)
        if found is None:
            return f"dependency '{alias}' has no pipe '{code}' in domain '{domain}'"
        if not dep.exported(domain, code):
            return (
                f"pipe '{domain}.{code}' of dependency '{alias}' is not exported "
                f"(add it to [exports.{domain}] pipes in its METHODS.toml)"
            )
        return PipeTarget(dep, found[0], code)
    if "." in ref:
        domain, _, code = ref.rpartition(".")
        found = library.pipe(domain, code)
        if found is None:
            return f"no pipe '{code}' in domain '{domain}' of this package"
        return PipeTarget(library, found[0], code)
    if ref in bundle.pipes:
        return PipeTarget(library, bundle, ref)
    found = library.pipe(bundle.domain, ref)
    if found is None:
        elsewhere = sorted({b.domain for b in library.bundles if ref in b.pipes})
        # Pipelex resolves a bare code in its own domain only, as the spec does (its pipe
        # library: "a ref names its own domain, or it names nothing"): name where it is.
        hint = (
            f"; domain '{elsewhere[0]}' of this package has one: write '{elsewhere[0]}.{ref}' "
            "(a bare code names a pipe of its own domain only, in Pipelex too)"
            if elsewhere
            else ""
        )
        return f"no pipe '{ref}' in this bundle or domain '{bundle.domain}'{hint}"
    return PipeTarget(library, found[0], ref)


def resolve_concept(library: Library, bundle: Bundle, ref: str) -> ConceptTarget | str:
    """The concept ``ref`` (no multiplicity) names from ``bundle``, or why it does not resolve."""
    if ref in NATIVE_CONCEPTS:
        return ConceptTarget(ref)
    if ref in LEGACY_NATIVES and ref not in bundle.concepts:
        return ConceptTarget(LEGACY_NATIVES[ref])
    if ref in PIPELEX_NATIVES and library.concept(bundle.domain, ref) is None:
        return ConceptTarget(ref)
    if "->" in ref:
        named = _dependency(library, ref)
        if isinstance(named, str):
            return named
        alias, dep, domain, code = named
        found = dep.concept(domain, code)
        if found is None:
            return f"dependency '{alias}' has no concept '{code}' in domain '{domain}'"
        return ConceptTarget(code, dep, found[0])
    if "." in ref:
        domain, _, code = ref.rpartition(".")
        if domain == "native":
            if code in LEGACY_NATIVES:
                return ConceptTarget(LEGACY_NATIVES[code])
            known = code in NATIVE_CONCEPTS or code in PIPELEX_NATIVES
            return ConceptTarget(code) if known else f"no native concept '{code}'"
        found = library.concept(domain, code)
        if found is None:
            return f"no concept '{code}' in domain '{domain}' of this package"
        return ConceptTarget(code, library, found[0])
    if ref in bundle.concepts:
        return ConceptTarget(ref, library, bundle)
    found = library.concept(bundle.domain, ref)
    if found is None:
        close = suggest(ref, [*bundle.concepts, *NATIVE_CONCEPTS])
        return (
            f"unknown concept '{ref}'{close}: declare it in [concept], or use a native concept "
            f"({', '.join(sorted(NATIVE_CONCEPTS))})"
        )
    return ConceptTarget(ref, library, found[0])


def refines(library: Library, bundle: Bundle, ref: str, ancestor: str) -> bool:
    """Whether concept ``ref`` is ``ancestor`` (a native code) or refines it, transitively."""
    seen: set[str] = set()
    current_library, current_bundle, current = library, bundle, ref
    while current not in seen:
        seen.add(current)
        target = resolve_concept(current_library, current_bundle, current)
        if isinstance(target, str):
            return False
        if target.native:
            return target.code == ancestor
        assert target.bundle is not None and target.library is not None
        refined = target.bundle.concepts[target.code].refines
        if refined is None:
            return False
        current_library, current_bundle, current = target.library, target.bundle, refined
    return False
