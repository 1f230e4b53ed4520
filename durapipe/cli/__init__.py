"""The ``durapipe`` command line."""

# Commands kept in modules of their own register themselves on `app` when imported.
from durapipe.cli import (  # noqa: F401
    _blob,
    _checkpoints,
    _codec,
    _observe,
    _run_commands,
    _runs,
    _serve,
)
from durapipe.cli._app import app, main

__all__ = ["app", "main"]
