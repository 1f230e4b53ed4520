"""``--methods DIR``: the folders of installed MTHDS methods a command's bundle resolves from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durapipe._errors import ConfigError

MethodsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--methods",
        exists=True,
        file_okay=False,
        help="MTHDS bundles: a folder of installed methods that package addresses before '->' "
        "resolve from (repeatable, in order; instead of DURAPIPE_MTHDS_METHODS, else "
        "~/.mthds/methods).",
        show_default=False,
    ),
]


def methods_for(file: Path, methods: list[Path] | None) -> list[Path] | None:
    """The ``--methods`` folders for ``file`` (None: the configured ones).

    Raises:
        ConfigError: ``--methods`` was given for a file that is not an MTHDS bundle or package.
    """
    if methods and not (file.suffix == ".mthds" or (file / "METHODS.toml").is_file()):
        raise ConfigError(
            f"--methods applies to MTHDS bundles (.mthds) and packages only; '{file}' is neither"
        )
    return methods or None
