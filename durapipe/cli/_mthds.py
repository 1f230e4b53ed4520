"""`durapipe run` on MTHDS bundles: inputs in MTHDS's format, output per its CLI I/O contract."""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import typer

from durapipe._errors import ConfigError
from durapipe.adapters.mthds import Method, mthds_inputs, mthds_output, pipe_for
from durapipe.cli._inputs import loads
from durapipe.cli._printable import printable_json


def pipe_name(method: Method, ref: str) -> str:
    """The durapipe name of the pipe ``ref`` (``code`` or ``domain.code``) names.

    Raises:
        ConfigError: no pipe of the bundle has that code.
    """
    name = pipe_for(method, ref)
    if name is None:
        known = ", ".join(sorted(method.outputs)) or "none"
        close = difflib.get_close_matches(ref.rpartition(".")[2], list(method.outputs), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"the bundle has no pipe '{ref}'{hint} (pipes: {known})")
    return name


def read_inputs(
    method: Method,
    pipe: str,
    inputs: str | None,
    stdin: TextIO | None = None,
    folder: Path | None = None,
) -> dict[str, Any] | None:
    """The run inputs from ``--inputs`` (inline JSON when it starts with ``{``, else a file) or,
    without it, from stdin when data is piped in, else (a package folder run) from the folder's
    ``inputs.json``; None when none gives any.

    Raises:
        ConfigError: the JSON does not parse, the file is missing, or the inputs do not fit.
    """
    text: str | None = None
    origin = "--inputs"
    if inputs is not None:
        if inputs.lstrip().startswith("{"):
            text = inputs
        else:
            path = Path(inputs)
            if not path.is_file():
                raise ConfigError(f"--inputs: '{inputs}' is neither inline JSON nor a file")
            text, origin = path.read_text(encoding="utf-8"), f"--inputs file '{inputs}'"
    else:
        stream = stdin or sys.stdin
        if not stream.isatty():
            text, origin = stream.read(), "stdin"
    if (text is None or not text.strip()) and folder is not None:
        found = folder / "inputs.json"
        if found.is_file():
            text, origin = found.read_text(encoding="utf-8"), f"'{found}'"
    if text is None or not text.strip():
        return None
    try:
        data = loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{origin} is not valid JSON: {err.msg} at position {err.pos}") from None
    return mthds_inputs(data, method.pipeline, pipe)


def print_output(
    method: Method,
    pipe: str,
    output: Any,
    values: dict[str, Any],
    *,
    with_memory: bool,
    main: str | None = None,
    concepts: dict[str, str] | None = None,
) -> None:
    """Print the run's output as compact JSON (or the ``--with-memory`` envelope) on stdout.

    With ``main`` (see `memory_pipeline`) the run returned every step result: ``output[main]`` is
    the pipe's own output and the others join the working memory.
    """
    memory = None
    if main is not None and isinstance(output, dict):
        from durapipe.adapters.mthds import memory_values

        memory = memory_values(output, concepts or {})
        output = output.get(main)
    shown = mthds_output(
        output,
        method.outputs.get(pipe, "Dynamic"),
        values,
        method.inputs.get(pipe, {}),
        with_memory=with_memory,
        memory=memory,
    )
    typer.echo(
        printable_json(json.dumps(shown, ensure_ascii=False, separators=(",", ":"), default=str))
    )


def error_json(message: str, code: int) -> str:
    """An error as the MTHDS CLI contract prints it on stderr (``message`` is durapipe's sentence).

    Exit code 2 is a mistake in what was asked (the bundle, an input); 1 a run that failed.
    """
    mistake = code == 2
    return printable_json(
        json.dumps(
            {
                "error": True,
                "error_type": "ValidationError" if mistake else "PipelineExecutionError",
                "message": message,
                "hint": "Fix the bundle or the inputs as the message says"
                if mistake
                else "The message names the step that failed and why",
                "error_domain": "input" if mistake else "runtime",
                "retryable": False,
            },
            ensure_ascii=False,
        )
    )
