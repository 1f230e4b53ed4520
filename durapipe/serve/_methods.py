"""The method a request carries (`files`) made into a durapipe pipeline, and the pipe to run.

A method travels as its whole tree: a map from tree path to a file entry (the file's text, its bytes
in Base64, or a hash this runner would have to hold). `.mthds` bundles and packages load through
`durapipe.adapters.mthds`, durapipe YAML pipelines through `durapipe.load_yaml` (an extension of
this runner); nothing a client sends is imported or executed here.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from durapipe._errors import DurapipeError, PipelineError, Problem
from durapipe.adapters import load_yaml
from durapipe.serve._problems import ServeError, problem_item
from durapipe.serve._trust import Capabilities, bundle_function_problems, unregistered
from durapipe.spec import Pipeline, check

MTHDS_SUFFIX = ".mthds"
MANIFEST = "METHODS.toml"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Method:
    """A loaded method: its pipeline, the pipe it starts at, and the MTHDS concepts of its pipes.

    Attributes:
        pipeline: the durapipe spec every run takes.
        main_pipe: the pipe a request without ``pipe_code`` runs.
        refs: MTHDS references (``domain.code``) -> durapipe pipe name.
        outputs: pipe name -> its output concept, domain-qualified (``legal.Clause[]``).
        inputs: pipe name -> input name -> its concept, domain-qualified.
        loaded: the MTHDS loader's own `durapipe.adapters.mthds.Method` (None for YAML), which
            resolves what a request names (a ``dynamic_output_concept_ref``).
    """

    pipeline: Pipeline
    main_pipe: str | None = None
    refs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    loaded: Any = None


def decode_files(files: object) -> dict[str, bytes]:
    """The tree's files by path, refusing paths outside the tree and entries this runner lacks.

    Raises:
        ServeError: ``files`` is no map of file entries, a path leaves the tree, an entry is
            malformed, or an entry is sent by hash (this runner keeps no blob store).
    """
    if not isinstance(files, Mapping) or not files:
        raise ServeError(
            "request.invalid",
            "The field 'files' must be a non-empty object mapping each tree path to its file entry.",
            params={"field": "files"},
        )
    tree: dict[str, bytes] = {}
    missing: list[str] = []
    for path, entry in files.items():
        _check_path(str(path))
        if isinstance(entry, str):
            tree[path] = entry.encode("utf-8")
        elif (
            isinstance(entry, Mapping)
            and set(entry) == {"base64"}
            and isinstance(entry["base64"], str)
        ):
            try:
                tree[path] = base64.b64decode(entry["base64"], validate=True)
            except binascii.Error:
                raise ServeError(
                    "request.malformed",
                    f"The file '{path}' is not valid padded standard Base64; send its text or its bytes in Base64.",
                    params={"reason": "bad_base64"},
                ) from None
        elif isinstance(entry, Mapping) and "sha256" in entry:
            missing.append(str(entry["sha256"]))
        else:
            raise ServeError(
                "request.invalid",
                f'The file entry of \'{path}\' must be its text, {{"base64": ...}} or {{"sha256": ..., "size": ...}}.',
                params={"field": f"files.{path}"},
            )
    if missing:
        raise ServeError(
            "request.blobs_missing",
            "This runner keeps no blob store, so it holds no file sent by hash: send every file inline.",
            params={"missing_blobs": missing},
        )
    return tree


def _check_path(path: str) -> None:
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or "\x00" in path:
        raise ServeError(
            "security.method_path_refused",
            f"The tree path '{path}' leaves the method's tree; send relative paths such as 'bundle.mthds'.",
            params={"pipe": "", "file": path},
        )


def load_method(
    tree: dict[str, bytes],
    deck: Any = None,
    capabilities: Capabilities | None = None,
    methods: Sequence[Path] | None = None,
) -> Method:
    """Load the method a tree holds; MTHDS model references resolve through ``deck``, package
    addresses from the installed methods in ``methods`` (default: the configured folders).

    With ``capabilities``, a ``PipeFunc`` naming an unregistered function is refused before the
    bundle loader (which imports the functions it checks) runs.

    Raises:
        ServeError: the tree holds no loadable method, or the method does not validate (every
            problem is an item of the error).
    """
    if any(path.endswith(".py") for path in tree):
        python = next(path for path in tree if path.endswith(".py"))
        raise ServeError(
            "method.invalid",
            f"The tree sends the Python file '{python}'; this runner runs only functions registered "
            "on its workers, so register the function there and leave the file out.",
            errors=[
                problem_item(
                    "method.function_invalid",
                    "Python code sent by a client is never run.",
                    file=python,
                )
            ],
        )
    try:
        if any(
            path.endswith(MTHDS_SUFFIX) or PurePosixPath(path).name == MANIFEST for path in tree
        ):
            if capabilities is not None:
                bundles = {p: data for p, data in tree.items() if p.endswith(MTHDS_SUFFIX)}
                refused = bundle_function_problems(bundles, capabilities)
                if refused:
                    raise _untrusted_functions(
                        tree, deck, refused, unregistered(bundles, capabilities), methods
                    )
            return _load_mthds(tree, deck, methods)
        yaml_files = [path for path in tree if path.endswith(YAML_SUFFIXES)]
        if len(yaml_files) == 1:
            source = yaml_files[0]
            pipeline = load_yaml(tree[source].decode("utf-8"), source=source)
            problems = check(pipeline, source=source)
            if problems:
                raise PipelineError(problems)
            return Method(pipeline)
    except UnicodeDecodeError:
        raise ServeError(
            "request.malformed",
            "A method file is not UTF-8 text; send .mthds and METHODS.toml files as UTF-8.",
            params={"reason": "not_utf8"},
        ) from None
    except PipelineError as err:
        raise invalid_method(err.problems) from None
    except DurapipeError as err:
        raise ServeError(
            "method.invalid",
            f"The method cannot be loaded: {err}.",
            errors=[problem_item("method.invalid", str(err))],
        ) from None
    raise ServeError(
        "request.invalid",
        "The field 'files' holds no method: send at least one .mthds bundle (or a package with METHODS.toml).",
        params={"field": "files"},
    )


def _load_mthds(tree: dict[str, bytes], deck: Any, methods: Sequence[Path] | None) -> Method:
    # Imported here: the MTHDS loader is only needed by requests that carry bundles.
    from durapipe.adapters import mthds

    bundles = [path for path in tree if path.endswith(MTHDS_SUFFIX)]
    manifests = sorted(
        (path for path in tree if PurePosixPath(path).name == MANIFEST),
        key=lambda path: (len(PurePosixPath(path).parts), path),
    )
    if not manifests:
        if len(bundles) != 1:
            raise ServeError(
                "request.invalid",
                f"The tree holds {len(bundles)} bundles and no {MANIFEST}: send one bundle, or a "
                f"package whose {MANIFEST} declares them.",
                params={"field": "files"},
            )
        loaded = mthds.load_method(
            tree[bundles[0]].decode("utf-8"), source=bundles[0], deck=deck, methods=methods
        )
        return _method_of(loaded)
    with tempfile.TemporaryDirectory(prefix="durapipe-serve-") as folder:
        root = Path(folder).resolve()
        for path, data in tree.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        package = (root / manifests[0]).parent
        _check_dependencies(root, package, manifests[0])
        loaded = mthds.load_method(package, deck=deck, methods=methods)
    return _method_of(loaded)


def _check_dependencies(root: Path, package: Path, manifest: str) -> None:
    """Refuse a local dependency whose path leaves the tree: it would read the runner's own disk."""
    from durapipe.adapters.mthds._bundle import read_toml

    try:
        data = read_toml((package / MANIFEST).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return  # the loader reports the broken manifest with its line
    dependencies = data.get("dependencies")
    if not isinstance(dependencies, dict):
        return
    for alias, spec in dependencies.items():
        path = spec.get("path") if isinstance(spec, dict) else None
        if isinstance(path, str) and not (package / path).resolve().is_relative_to(root):
            raise ServeError(
                "security.method_path_refused",
                f"The dependency '{alias}' of {manifest} points at '{path}', outside the tree "
                "sent: send the dependency's files in the same tree.",
                params={"pipe": "", "file": path},
            )


def _method_of(loaded: Any) -> Method:
    """Our view of an MTHDS `Method`: reference names and domain-qualified concepts."""
    from durapipe.adapters import mthds

    refs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    inputs: dict[str, dict[str, str]] = {}
    for bundle in loaded.library.bundles:
        for code, blueprint in bundle.pipes.items():
            name = mthds.pipe_for(loaded, f"{bundle.domain}.{code}")
            if name is None:
                continue
            refs[f"{bundle.domain}.{code}"] = name
            outputs[name] = qualified(blueprint.output, bundle.domain)
            inputs[name] = {k: qualified(v, bundle.domain) for k, v in blueprint.inputs.items()}
    return Method(loaded.pipeline, loaded.main_pipe, refs, outputs, inputs, loaded)


# The concepts every MTHDS runtime knows (the spec's, and those Pipelex adds that bundles use).
NATIVE_CONCEPTS = frozenset(
    {
        "Text",
        "Image",
        "Document",
        "Page",
        "Number",
        "JSON",
        "Html",
        "TextAndImages",
        "ImgGenPrompt",
        "SearchResult",
        "Dynamic",
        "Anything",
        "Markdown",
        "YesNo",
        "Choice",
        "Rating",
        "Composite",
        "Date",
    }
)


def qualified(concept: str, domain: str) -> str:
    """A concept reference with its domain (``native.Text``, ``legal.Clause[]``)."""
    code, bracket, rest = concept.partition("[")
    code = code.rpartition("->")[2]  # a dependency's concept (`scoring->scoring.Score`)
    if "." not in code:
        code = f"native.{code}" if code in NATIVE_CONCEPTS else f"{domain}.{code}"
    return f"{code}{bracket}{rest}"


_WHERE = re.compile(r"pipe '(?P<pipe>[^']+)'(?:.*?(?:field|step) '(?P<field>[^']+)')?")
_SOURCE = re.compile(r"^(?P<file>.*?)(?::(?P<line>\d+))?(?::\d+)?$")
# Words of durapipe's validation messages, mapped to the MTHDS code of the same fault.
_CODE_HINTS = (
    # The loader's own trust check (a connection setting in a pipe) reads as serve's does.
    ("connection setting", "method.model_setting_invalid"),
    ("never used", "method.input_unused"),
    ("is not a declared input", "method.input_undeclared"),
    ("cycle", "method.cycle"),
    ("unknown pipe", "method.pipe_unresolved"),
    ("no pipe", "method.pipe_unresolved"),
    ("template", "method.template_invalid"),
    ("function", "method.function_invalid"),
    ("concept", "method.concept_unresolved"),
)


def problem_items(problems: list[Problem]) -> list[dict[str, Any]]:
    """One `ProblemItem` per durapipe problem, with its pipe, field, file and line."""
    items = []
    for problem in problems:
        where = _WHERE.search(problem.where)
        source = _SOURCE.match(problem.source or "")
        line = source.group("line") if source else None
        text = f"{problem.where}: {problem.message}".lower()
        code = next((c for hint, c in _CODE_HINTS if hint in text), "method.invalid")
        items.append(
            problem_item(
                code,
                str(problem),
                pipe=where.group("pipe") if where else None,
                field=where.group("field") if where else None,
                file=(source.group("file") or None) if source else None,
                line=int(line) if line else None,
            )
        )
    return items


def invalid_method(problems: list[Problem]) -> ServeError:
    """The refusal of a method that does not validate: every problem, each an item."""
    count = len(problems)
    first = str(problems[0]) if problems else "no detail"
    more = f" (and {count - 1} more problems, listed in 'errors')" if count > 1 else ""
    return ServeError(
        "method.invalid",
        f"The method does not validate: {first}{more}.",
        errors=problem_items(problems),
    )


def choose_pipe(method: Method, pipe_code: object) -> str:
    """The pipe to run: the one named, else the method's main pipe.

    Raises:
        ServeError: the named pipe is not in the method, or none is named and there is no main pipe.
    """
    pipes = method.pipeline.pipes
    if pipe_code is not None and not isinstance(pipe_code, str):
        raise ServeError(
            "request.invalid",
            "The field 'pipe_code' must be a string.",
            params={"field": "pipe_code"},
        )
    if pipe_code:
        if pipe_code in pipes:
            return pipe_code
        if pipe_code in method.refs:
            return method.refs[pipe_code]
        bare = pipe_code.rpartition(".")[2]
        close = difflib.get_close_matches(bare, list(pipes), n=3)
        hint = (
            f"; did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"; its pipes: {', '.join(sorted(pipes))}"
        )
        raise ServeError(
            "request.pipe_not_found",
            f"The method declares no pipe '{pipe_code}'{hint}",
            params={"pipe": pipe_code, "suggestions": close},
        )
    if method.main_pipe:
        return method.main_pipe
    raise ServeError(
        "request.pipe_unspecified",
        "The request names no pipe and the method has no main_pipe: send 'pipe_code' "
        f"(one of: {', '.join(sorted(pipes))}).",
        params={"candidates": sorted(pipes)},
    )


def untrusted(
    found: list[tuple[str, str, str]], others: list[dict[str, Any]] | None = None
) -> ServeError:
    """The refusal of a method that reaches past the workers' capabilities: every way it does,
    and ``others``, the method's other problems."""
    items = [trust_item(item) for item in found] + (others or [])
    count = len(items)
    more = f" (and {count - 1} more, listed in 'errors')" if count > 1 else ""
    return ServeError(
        "method.invalid",
        f"The method oversteps this runner's capabilities: {found[0][2]}{more}.",
        errors=items,
    )


# A module no installation has: an unregistered function is renamed into it before the bundle
# loader (which imports each PipeFunc's function) runs, so it finds the method's other problems
# without importing anything a client named.
_NOWHERE = "durapipe_serve_unregistered_function"


def _untrusted_functions(
    tree: dict[str, bytes],
    deck: Any,
    refused: list[tuple[str, str, str]],
    names: set[str],
    methods: Sequence[Path] | None,
) -> ServeError:
    """The refusal of unregistered functions, with every other problem the method has."""
    renamed = dict(tree)
    for path, data in tree.items():
        if path.endswith(MTHDS_SUFFIX):
            text = data.decode("utf-8", errors="replace")
            for name in names:
                text = text.replace(f'"{name}"', f'"{_NOWHERE}.{name.rpartition(".")[2]}"')
            renamed[path] = text.encode("utf-8")
    try:
        _load_mthds(renamed, deck, methods)
    except PipelineError as err:
        others = [p for p in err.problems if _NOWHERE not in str(p)]
        return untrusted(refused, problem_items(others))
    except ServeError as err:
        return untrusted(refused, [e for e in err.errors or [] if _NOWHERE not in str(e)])
    return untrusted(refused)


def trust_item(item: tuple[str, str, str]) -> dict[str, Any]:
    """One way a method oversteps the capabilities, as a `ProblemItem`."""
    pipe, where, detail = item
    code = {"model": "model.unknown", "function": "method.function_invalid"}.get(where)
    if where == "function_name":
        code = "method.function_invalid"
    return problem_item(code or "method.model_setting_invalid", detail, pipe=pipe, field=where)
