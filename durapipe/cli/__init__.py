"""The ``durapipe`` command line."""

from durapipe.cli import _control  # noqa: F401  (registers the control commands on the app)
from durapipe.cli._app import app, main

__all__ = ["app", "main"]
