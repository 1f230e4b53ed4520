"""Loading a pipeline file (YAML or a Python module) and finding the tool functions it names."""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pydantic

from durapipe._errors import ConfigError, PipelineError, Problem
from durapipe.adapters._providers import provider_problems
from durapipe.adapters._yaml import Shaped, part_lines, shape_yaml
from durapipe.adapters._yaml_guard import MAX_FILE_BYTES
from durapipe.spec._spec import Pipeline, ToolPipe
from durapipe.spec._validate import check

PYTHON_SUFFIXES = (".py",)
YAML_SUFFIXES = (".yaml", ".yml")
MTHDS_SUFFIX, MTHDS_MANIFEST = ".mthds", "METHODS.toml"


def load(
    path: str | Path,
    *,
    import_tools: bool = True,
    methods: Sequence[str | Path] | None = None,
) -> Pipeline:
    """Load and validate a pipeline file; its folder goes on the Python path so tools import.

    A Python file must define a module-level `Pipeline` (``pipeline = durapipe.pipeline(...)``).
    With ``import_tools=False`` (what ``durapipe validate`` does) a YAML file is checked without
    importing anything: tool references are checked for their shape only, and the file's folder
    stays off the Python path. A Python pipeline file is code, so loading it always runs it.
    ``methods``: for an MTHDS bundle or package, the folders of installed methods its package
    addresses resolve from (default ``DURAPIPE_MTHDS_METHODS``, else ``~/.mthds/methods``).

    Raises:
        ConfigError: the file does not exist or has an unknown suffix.
        PipelineError: the pipeline has mistakes (all of them are listed).
    """
    file = Path(path)
    _check_readable(file)
    if file.suffix == MTHDS_SUFFIX or (file / MTHDS_MANIFEST).is_file():
        return _load_mthds(file, import_tools=import_tools, methods=methods)
    if file.is_dir():
        raise ConfigError(
            f"'{path}' is a folder without {MTHDS_MANIFEST}: give a pipeline file (.yaml, .yml, "
            ".py or .mthds) or an MTHDS package folder"
        )
    if not file.is_file():
        raise ConfigError(f"pipeline file '{path}' does not exist")
    if import_tools or file.suffix in PYTHON_SUFFIXES:
        _add_to_path(file.parent)
    lines: dict[str, int] = {}
    if file.suffix in YAML_SUFFIXES:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:  # refused before it is read: a file of gigabytes is input too
            raise PipelineError(
                [
                    Problem(
                        "YAML",
                        f"the file is {size} bytes; a pipeline file may hold at most "
                        f"{MAX_FILE_BYTES}",
                        str(path),
                    )
                ]
            )
        text = file.read_text(encoding="utf-8", errors="replace")
        shaped = shape_yaml(text, source=str(path))
        lines = part_lines(text, str(path))
        if shaped.problems:
            raise PipelineError(shaped.problems + _meaning_problems(shaped, str(path), lines))
        assert shaped.pipeline is not None  # no shape problem: it validated
        pipeline = shaped.pipeline
    elif file.suffix in PYTHON_SUFFIXES:
        pipeline = _load_module(file)
    else:
        raise ConfigError(
            f"pipeline file '{path}' must end in .yaml, .yml, .py or .mthds (or be a folder with "
            "METHODS.toml)"
        )
    problems = check(pipeline, source=str(path))
    problems += provider_problems(pipeline, str(path))
    if import_tools:
        problems += _tool_problems(pipeline, str(path))
    if problems:
        raise PipelineError([_located(p, lines) for p in problems])
    return pipeline


# What a path that is neither a file nor a folder is, in a sentence (`stat`'s tests, in order).
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_readable(file: Path) -> None:
    """Refuse, in one sentence, a path that exists but cannot be read as a pipeline file: a
    named pipe, a socket or a device (reading a FIFO would wait for a writer), or a file or
    folder this process may not read. A path that does not exist is left to the callers.

    Raises:
        ConfigError: what the path is, or why it cannot be read.
    """
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:  # a folder on the way that may not be entered
        raise ConfigError(f"pipeline file '{file}' cannot be read: {err.strerror}") from None
    what = next((name for test, name in _NOT_REGULAR if test(mode)), None)
    if what is not None:
        raise ConfigError(
            f"pipeline file '{file}' is {what}, not a file: give a pipeline file (.yaml, .yml, "
            ".py or .mthds) or an MTHDS package folder"
        )
    wanted = os.R_OK | os.X_OK if stat.S_ISDIR(mode) else os.R_OK
    if not os.access(file, wanted):
        raise ConfigError(
            f"pipeline file '{file}' cannot be read: permission denied (its mode is "
            f"{stat.filemode(mode)}); give the user running durapipe read access to it"
        )


def _meaning_problems(shaped: Shaped, source: str, lines: dict[str, int]) -> list[Problem]:
    """The meaning problems of the rest of a YAML file whose shape has problems, so one pass
    reports them all; none that may come from a value refused (see `Shaped.consequence`).
    Tool functions are not imported: the file is refused anyway."""
    if shaped.pipeline is None:
        return []
    found = check(shaped.pipeline, source=source) + provider_problems(shaped.pipeline, source)
    return [_located(p, lines) for p in found if not shaped.consequence(p)]


def _load_mthds(
    file: Path, *, import_tools: bool, methods: Sequence[str | Path] | None
) -> Pipeline:
    """An MTHDS bundle or package folder: the third spelling, translated by its adapter."""
    # Imported here: the MTHDS adapter builds on this package (no import cycle at module level).
    from durapipe.adapters.mthds import load_mthds

    if not file.exists():
        raise ConfigError(f"pipeline file '{file}' does not exist")
    if not import_tools:  # `validate`: nothing next to the bundle is imported
        return load_mthds(file, import_functions=False, methods=methods)
    _add_to_path(file if file.is_dir() else file.parent)
    pipeline = load_mthds(file, methods=methods)
    problems = _tool_problems(pipeline, str(file))
    if problems:
        raise PipelineError(problems)
    return pipeline


def _located(problem: Problem, lines: dict[str, int]) -> Problem:
    """The problem pointing at the line of the part it names (the innermost known), when known."""
    parts = [w for w in lines if problem.where == w or problem.where.startswith(f"{w},")]
    if parts:
        line = lines[max(parts, key=len)]
        return Problem(problem.where, problem.message, f"{problem.source}:{line}")
    return problem


def _add_to_path(folder: Path) -> None:
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _field_problems(err: pydantic.ValidationError, file: Path) -> list[Problem]:
    """A builder's validation error (``dp.llm(..., retry={"max_attempts": 0})``) as one problem a
    field, at the line of the module that made the call, instead of pydantic's page of text."""
    line = next(
        (
            frame.tb_lineno
            for frame in _frames(err.__traceback__)
            if Path(frame.tb_frame.f_code.co_filename).resolve() == file.resolve()
        ),
        None,
    )
    source = f"{file}:{line}" if line else str(file)
    return [
        Problem(
            f"{err.title}, field '{'.'.join(str(part) for part in error['loc'])}'",
            error["msg"],
            source,
        )
        for error in err.errors(include_url=False)
    ]


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    found = []
    while tb is not None:
        found.append(tb)
        tb = tb.tb_next
    return found[::-1]  # the innermost call in the module first


def _load_module(file: Path) -> Pipeline:
    name = file.stem
    existing = sys.modules.get(name)
    if (
        existing is not None
        and Path(getattr(existing, "__file__", "") or "").resolve() == file.resolve()
    ):
        module = existing
    else:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import '{file}' as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            if isinstance(err, pydantic.ValidationError):
                raise PipelineError(_field_problems(err, file)) from err
            raise PipelineError(
                [Problem("module", f"importing it raised {type(err).__name__}: {err}", str(file))]
            ) from err
    found = [value for value in vars(module).values() if isinstance(value, Pipeline)]
    chosen = getattr(module, "pipeline", None)
    if isinstance(chosen, Pipeline):
        return chosen
    if len(found) == 1:
        return found[0]
    message = (
        "defines no pipeline: add `pipeline = durapipe.pipeline(...)` at module level"
        if not found
        else "defines several pipelines: name the one to use `pipeline`"
    )
    raise PipelineError([Problem("module", message, str(file))])


def import_function(ref: str) -> Callable[..., Any]:
    """The function a tool's ``module:name`` reference names.

    Raises:
        ConfigError: the module does not import or has no such function.
    """
    module_name, _, attribute = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:
        raise ConfigError(f"cannot import module '{module_name}' for tool '{ref}': {err}") from err
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(
                f"module '{module_name}' has no function '{attribute}' (tool '{ref}')"
            )
    if not callable(target):
        raise ConfigError(f"tool '{ref}' is not a function")
    return target  # type: ignore[no-any-return]


def tool_functions(pipeline: Pipeline) -> dict[str, Callable[..., Any]]:
    """Every tool function the pipeline names, by reference.

    Raises:
        ConfigError: a function cannot be imported.
    """
    return {
        pipe.function: import_function(pipe.function)
        for pipe in pipeline.pipes.values()
        if isinstance(pipe, ToolPipe)
    }


def _tool_problems(pipeline: Pipeline, source: str) -> list[Problem]:
    problems = []
    for name, pipe in pipeline.pipes.items():
        if isinstance(pipe, ToolPipe):
            try:
                import_function(pipe.function)
            except ConfigError as err:
                problems.append(Problem(f"pipe '{name}', field 'function'", str(err), source))
    return problems
