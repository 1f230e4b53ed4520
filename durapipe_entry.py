"""The ``durapipe`` command's entry point, kept outside the package so that importing it is cheap.

A console script imports its module before it calls anything, and ``durapipe.cli`` loads the
whole package (about a second, more on a loaded machine): a Ctrl-C meanwhile raised
KeyboardInterrupt in the middle of some import and printed its traceback. This module imports only
``os`` and ``signal``, so Ctrl-C ends the command quietly with exit code 130 from the moment the
interpreter runs it. ``python -m durapipe`` gets the same (see ``durapipe/__init__.py``).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT (128 + 2)


def main() -> None:
    """Load the CLI with Ctrl-C ending the process quietly, then run the command."""
    quiet_interrupts()
    from durapipe.cli import main as command

    command()  # it installs Python's own handler again before it runs anything


def quiet_interrupts() -> None:
    """Until the CLI has loaded, Ctrl-C exits at once with 130 and prints nothing.

    Left alone when SIGINT is ignored (a command started in the background keeps ignoring it).
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    # Nothing was printed or started yet: no buffers to flush, nothing to stop.
    os._exit(INTERRUPTED)


def is_python_m_durapipe() -> bool:
    """Whether Python is locating the module of ``python -m durapipe``: it imports the package
    (while ``sys.argv[0]`` is ``-m``) before it runs ``durapipe/__main__.py``."""
    if sys.argv[:1] != ["-m"]:
        return False
    args = sys.orig_argv[1:]
    for at, arg in enumerate(args):
        if arg == "-m":
            return args[at + 1 : at + 2] == ["durapipe"]
        if arg.startswith("-m"):
            return arg == "-mdurapipe"
    return False
