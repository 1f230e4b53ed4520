"""``--methods DIR``: the folders of installed MTHDS methods a command's bundle resolves from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from durapipe._errors import ConfigError

MethodsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--methods",
        readable=False,  # durapipe says why it cannot use it, in its own sentence
        help="MTHDS bundles: a folder of installed methods that package addresses before '->' "
        "resolve from (repeatable, in order; instead of DURAPIPE_MTHDS_METHODS, else "
        "~/.mthds/methods).",
        show_default=False,
    ),
]


def methods_for(file: Path, methods: list[Path] | None) -> list[Path] | None:
    """The ``--methods`` folders for ``file`` (None: the configured ones).

    Raises:
        ConfigError: ``--methods`` was given for a file that is not an MTHDS bundle or package,
            or names a folder this process cannot read.
    """
    if methods and not (file.suffix == ".mthds" or (file / "METHODS.toml").is_file()):
        raise ConfigError(
            f"--methods applies to MTHDS bundles (.mthds) and packages only; '{file}' is neither"
        )
    for folder in methods or ():
        check_methods_folder(folder)
    return methods or None


def check_methods_folder(folder: Path) -> None:
    """Refuse, in one sentence, a ``--methods`` folder that is missing, a file or unreadable
    (Typer's usage box said "does not exist" or "is a file").

    Raises:
        ConfigError: what is wrong with ``folder``.
    """
    if not folder.exists():
        raise ConfigError(
            f"--methods '{folder}': no such folder; give a folder of installed methods"
        )
    if not folder.is_dir():
        raise ConfigError(f"--methods '{folder}' is a file; give a folder of installed methods")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise ConfigError(
            f"--methods '{folder}': cannot read the folder (permission denied); give the user "
            "running durapipe read access to it"
        )
