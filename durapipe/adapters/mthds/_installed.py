"""Package addresses before ``->`` (``github.com/Pipelex/methods/documents->documents.extract``),
resolved from installed methods on this machine only.

The spec resolves only a ``[dependencies]`` alias before ``->``; Pipelex also takes a package's
address (``<manifest address>/<manifest name>``, or the address alone, case-insensitively, with an
optional ``@tag``) and looks it up among installed methods: ``.mthds/methods/`` of the project and
``~/.mthds/methods/``, fetching it from Git on a miss. durapipe looks in the same places (the
configured store ``DURAPIPE_MTHDS_METHODS`` replaces ``~/.mthds/methods``) and in the package's
declared dependencies, and never fetches: the address is compared with manifests, never used as a
path or a URL, so a bundle cannot make a worker read outside its stores or reach the network.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MANIFEST: Final = "METHODS.toml"
PROJECT_STORE: Final = Path(".mthds") / "methods"
_MAX_DEPTH: Final = (
    4  # store/<repo>/<method>/METHODS.toml as `mthds install` writes it, and one more
)
_MAX_MANIFESTS: Final = 2000  # a store is a folder of packages, not a disk to crawl


@dataclass(frozen=True)
class Installed:
    """One package found in a store: its manifest and its identity."""

    manifest: Path
    address: str
    name: str


def address_key(reference: str) -> str:
    """The part before ``->`` as compared with manifests: no ``@tag``, lower case."""
    return reference.partition("@")[0].strip().rstrip("/").lower()


def is_address(alias: str) -> bool:
    """Whether the part before ``->`` is a package address rather than a dependency alias."""
    return "/" in alias


def configured_stores() -> list[Path]:
    """``DURAPIPE_MTHDS_METHODS`` (folders separated by ``os.pathsep``), else ``~/.mthds/methods``."""
    from durapipe._settings import settings

    configured = settings().mthds_methods
    if configured:
        return [Path(part).expanduser() for part in configured.split(os.pathsep) if part.strip()]
    return [Path.home() / ".mthds" / "methods"]


def stores_for(package_folder: Path, extra: Sequence[Path] | None = None) -> list[Path]:
    """Where a package's address references are looked up, in order: its own ``.mthds/methods/``,
    then ``extra`` (given by the caller) or the configured stores."""
    return [package_folder / PROJECT_STORE, *(extra if extra is not None else configured_stores())]


def matches(key: str, address: str, name: str) -> bool:
    """Whether an address reference names the package ``address`` (+ ``name``)."""
    address = address.strip().rstrip("/").lower()
    return key == address or (bool(name) and key == f"{address}/{name.lower()}")


def find_installed(key: str, stores: Sequence[Path]) -> list[Installed]:
    """The packages of the first store holding one that ``key`` names (several: ambiguous)."""
    for store in stores:
        found = [p for p in _packages(store) if matches(key, p.address, p.name)]
        if found:
            return found
    return []


def _packages(store: Path) -> Iterator[Installed]:
    if not store.is_dir():
        return
    seen = 0
    for manifest in _manifests(store, 0):
        seen += 1
        if seen > _MAX_MANIFESTS:
            return
        try:
            package = tomllib.loads(manifest.read_text(encoding="utf-8")).get("package", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # reported when (if) the package is loaded; here it matches nothing
        if isinstance(package, dict) and isinstance(package.get("address"), str):
            name = package.get("name")
            yield Installed(manifest, package["address"], name if isinstance(name, str) else "")


def _manifests(folder: Path, depth: int) -> Iterator[Path]:
    if (folder / MANIFEST).is_file() and not (folder / MANIFEST).is_symlink():
        yield folder / MANIFEST
        return  # a package's own subfolders hold its bundles, not other packages
    if depth >= _MAX_DEPTH:
        return
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if not child.name.startswith("."):
            yield from _manifests(child, depth + 1)
