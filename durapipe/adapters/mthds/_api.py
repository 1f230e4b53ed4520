"""Loading and validating MTHDS bundles and packages into durapipe's spec."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from durapipe._errors import PipelineError, Problem
from durapipe.adapters.mthds._deck import ModelDeck, load_deck
from durapipe.adapters.mthds._library import Library, resolve_pipe
from durapipe.adapters.mthds._natives import NATIVE_TYPES
from durapipe.adapters.mthds._notes import notes
from durapipe.adapters.mthds._package import MANIFEST, load_path, load_text
from durapipe.adapters.mthds._rules import check_library
from durapipe.adapters.mthds._translate import translate
from durapipe.spec import Pipeline, ToolPipe, check
from durapipe.spec._compose import check_compose_paths
from durapipe.spec._spec import ComposePipe

SUFFIX = ".mthds"


class MthdsError(PipelineError):
    """A bundle or package breaks the MTHDS rules (or uses what durapipe does not support yet).

    ``problems`` lists every one found, each naming bundle, pipe and field, with the TOML line.
    """


@dataclass(frozen=True)
class Method:
    """A loaded bundle or package: its durapipe pipeline and what the MTHDS spelling adds.

    Attributes:
        pipeline: the durapipe spec every run path takes.
        main_pipe: the durapipe name of the bundle's (or package's) ``main_pipe``.
        outputs: durapipe pipe name -> its MTHDS output concept (for the CLI output contract).
        inputs: durapipe pipe name -> input name -> MTHDS concept.
        library: the parsed bundles, to resolve MTHDS references (``domain.code``).
        notes: fields the bundles set that have no effect in durapipe yet, one note each.
    """

    pipeline: Pipeline
    main_pipe: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    library: Library = field(default_factory=Library)
    notes: list[Problem] = field(default_factory=list)


def is_mthds_path(path: str | Path) -> bool:
    """Whether ``path`` is a `.mthds` file or a package folder (with `METHODS.toml`)."""
    target = Path(path)
    return target.suffix == SUFFIX or (target.is_dir() and (target / MANIFEST).is_file())


def load_method(
    path_or_text: str | Path,
    *,
    source: str | None = None,
    deck: ModelDeck | None = None,
    import_functions: bool = True,
    methods: Sequence[str | Path] | None = None,
) -> Method:
    """Load a bundle file, a package folder or bundle text (TOML) into a `Method`.

    With ``import_functions=False`` (``durapipe validate``) nothing a bundle names is imported:
    PipeFunc functions are checked by the worker that runs them. ``methods``: folders of
    installed methods that a package address before ``->`` resolves from (default
    ``DURAPIPE_MTHDS_METHODS``, else ``~/.mthds/methods``), after the package's ``.mthds/methods``.

    Raises:
        MthdsError: every problem found, at once.
    """
    stores = None if methods is None else [Path(m) for m in methods]
    library, problems = _library(path_or_text, source, stores)
    if problems:
        raise MthdsError(problems)
    problems = check_library(library)
    if problems:
        raise MthdsError(problems + _compose_path_problems(library, deck))
    pipeline, problems, main = translate(library, deck or load_deck())
    if problems:
        raise MthdsError(problems + _paths_reading_nothing(pipeline, library))
    label = source or (str(path_or_text) if isinstance(path_or_text, Path) else "<mthds>")
    problems = [_located(p, library) for p in check(pipeline, source=label)]
    if import_functions:
        problems += _function_problems(pipeline, library)
    if problems:
        raise MthdsError(problems)
    outputs: dict[str, str] = {}
    inputs: dict[str, dict[str, str]] = {}
    for bundle in library.bundles:
        for code, blueprint in bundle.pipes.items():
            target = resolve_pipe(library, bundle, code)
            if isinstance(target, str):
                continue
            name = _name_of(pipeline, library, bundle.domain, code)
            if name is not None:
                outputs[name] = blueprint.output
                inputs[name] = dict(blueprint.inputs)
    return Method(pipeline, main, outputs, inputs, library, notes(library))


def load_mthds(
    path_or_text: str | Path,
    *,
    source: str | None = None,
    deck: ModelDeck | None = None,
    import_functions: bool = True,
    methods: Sequence[str | Path] | None = None,
) -> Pipeline:
    """The durapipe `Pipeline` of a `.mthds` file, a package folder, or bundle TOML text
    (``methods``: see `load_method`).

    Example:
        >>> pipeline = load_mthds("methods/jokes.mthds")
        >>> result = await durapipe.run_local(pipeline, "generate_joke", {"topic": "cats"})

    Raises:
        MthdsError: every problem found, at once (bundle, pipe, field, TOML line).
    """
    return load_method(
        path_or_text,
        source=source,
        deck=deck,
        import_functions=import_functions,
        methods=methods,
    ).pipeline


def validate_mthds(path_or_text: str | Path, *, source: str | None = None) -> list[Problem]:
    """Every problem of a bundle or package ([] when it is valid); never raises for a bad bundle."""
    try:
        load_method(path_or_text, source=source)
    except PipelineError as err:
        return err.problems
    return []


def main_pipe(path_or_text: str | Path, *, source: str | None = None) -> str | None:
    """The durapipe name of the bundle's (or package's) ``main_pipe``."""
    return load_method(path_or_text, source=source).main_pipe


def pipe_for(method: Method, ref: str) -> str | None:
    """The durapipe pipe name of an MTHDS reference (``code`` or ``domain.code``) in ``method``."""
    if ref in method.pipeline.pipes:
        return ref
    domain, _, code = ref.rpartition(".")
    for bundle in method.library.bundles:
        if (not domain or bundle.domain == domain) and code in bundle.pipes:
            return _name_of(method.pipeline, method.library, bundle.domain, code)
    return None


def _name_of(pipeline: Pipeline, library: Library, domain: str, code: str) -> str | None:
    shared = sum(1 for b in library.bundles if code in b.pipes) > 1
    name = f"{domain.replace('.', '_')}-{code}" if shared else code
    return name if name in pipeline.pipes else None


def _library(
    path_or_text: str | Path, source: str | None, methods: list[Path] | None
) -> tuple[Library, list[Problem]]:
    if isinstance(path_or_text, Path) or (
        path_or_text.strip()
        and "\n" not in path_or_text
        and (path_or_text.endswith(SUFFIX) or Path(path_or_text).is_dir())
    ):
        path = Path(path_or_text)
        if not path.exists():
            return Library(), [Problem("bundle", f"'{path}' does not exist", str(path))]
        return load_path(path, methods=methods)
    return load_text(str(path_or_text), source or "<mthds>", methods=methods)


def _function_problems(pipeline: Pipeline, library: Library) -> list[Problem]:
    """A PipeFunc whose function does not import, named at its ``function_name`` line."""
    for bundle in library.bundles:
        folder = Path(bundle.source).parent
        if folder.is_dir() and str(folder.resolve()) not in sys.path:
            # The bundle's own folder, as for YAML pipelines: functions next to the bundle import.
            sys.path.insert(0, str(folder.resolve()))
    problems: list[Problem] = []
    for bundle in library.bundles:
        for code in bundle.pipes:
            pipe = pipeline.pipes.get(_name_of(pipeline, library, bundle.domain, code) or "")
            if isinstance(pipe, ToolPipe):
                missing = _unimportable(pipe.function)
                if missing is not None:
                    problems.append(
                        Problem(
                            f"bundle '{bundle.domain}', pipe '{code}', field 'function_name'",
                            missing,
                            bundle.where(f"pipe.{code}.function_name"),
                        )
                    )
    return problems


def _unimportable(ref: str) -> str | None:
    """Why the function ``module:name`` does not import (None when it does).

    The same check as the YAML loader's, written here: the loader imports this adapter, so the
    adapter cannot import the loader back.
    """
    module_name, _, attribute = ref.partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as err:
        return f"cannot import module '{module_name}' for function '{ref}': {err}"
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            return f"module '{module_name}' has no function '{attribute}'"
    return None if callable(target) else f"'{ref}' is not a function"


_CONSTRUCT_FIELD = re.compile(r"^, field 'build\.([^']+)'$")


def _compose_path_problems(library: Library, deck: ModelDeck | None) -> list[Problem]:
    """The compose paths that read nothing in a bundle the spec's rules refuse, listed beside
    the rules' problems (every problem at once): they come from durapipe's checks of the
    translated pipeline, which such a bundle does not otherwise reach."""
    try:
        pipeline = translate(library, deck or load_deck())[0]
    except Exception:
        # The rules' problems stand alone: a bundle they refuse may be past translating.
        return []
    return _paths_reading_nothing(pipeline, library)


def _paths_reading_nothing(pipeline: Pipeline, library: Library) -> list[Problem]:
    found: list[Problem] = []
    for name, pipe in pipeline.pipes.items():
        if isinstance(pipe, ComposePipe):
            check_compose_paths(
                name,
                pipe,
                pipeline.structures,
                lambda where, message: found.append(_located(Problem(where, message), library)),
            )
    return found


def _located(problem: Problem, library: Library) -> Problem:
    """A durapipe check's problem, pointed at the MTHDS bundle and line of the pipe it names."""
    for bundle in library.bundles:
        for code in bundle.pipes:
            if problem.where.startswith(f"pipe '{code}'"):
                where, key = problem.where, f"pipe.{code}"
                construct = _CONSTRUCT_FIELD.match(where[len(f"pipe '{code}'") :])
                if construct:  # a compose's `build` is the bundle's `construct` table
                    where = f"pipe '{code}', construct field '{construct.group(1)}'"
                    key += f".construct.{construct.group(1)}"
                message = _concept_named(problem.message, bundle.pipes[code].inputs)
                return Problem(f"bundle '{bundle.domain}', {where}", message, bundle.where(key))
    return problem


# How a compose path check says an input is text: `'analysis' is text, which has no field ...`.
_READS_TEXT = re.compile(r"reads nothing: '(?P<input>[^'.]+)' is text, ")


def _concept_named(message: str, inputs: dict[str, str]) -> str:
    """``message`` naming the concept of an input it calls text, when the bundle declares the input
    as a concept of its own with no structure (a text to durapipe, a ``MatchAnalysis`` to the
    reader of the bundle)."""
    found = _READS_TEXT.search(message)
    concept = inputs.get(found.group("input"), "Text").rstrip("?!") if found else "Text"
    if found is None or concept.rpartition(".")[2] in NATIVE_TYPES:
        return message
    said = (
        f"reads nothing: '{found.group('input')}' is {concept}, a concept with no structure "
        "(a text), "
    )
    return message[: found.start()] + said + message[found.end() :]
