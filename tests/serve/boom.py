"""A module that must never be imported by `durapipe serve`: importing it leaves a mark."""

import os
from pathlib import Path

Path(os.environ["DURAPIPE_TEST_GATE"], "boom-imported").touch()


def explode(text: str) -> str:
    """Never called."""
    return text
