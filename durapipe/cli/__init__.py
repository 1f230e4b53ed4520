"""The ``durapipe`` command line."""

from durapipe.cli import _codec  # noqa: F401  (registers codec-server and codec-key)
from durapipe.cli._app import app, main

__all__ = ["app", "main"]
