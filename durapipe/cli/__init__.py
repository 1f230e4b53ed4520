"""The ``durapipe`` command line."""

from durapipe.cli._app import app, main

__all__ = ["app", "main"]
