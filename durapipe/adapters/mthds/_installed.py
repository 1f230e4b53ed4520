"""Package addresses before ``->`` (``github.com/Pipelex/methods/documents->documents.extract``),
resolved from installed methods on this machine only.

The spec resolves only a ``[dependencies]`` alias before ``->``; Pipelex also takes a package's
address (``<manifest address>/<manifest name>``, or the address alone, case-insensitively, with an
optional ``@tag``) and looks it up among installed methods: ``.mthds/methods/`` of the project and
``~/.mthds/methods/``, fetching it from Git on a miss. durapipe looks in the same places (the
configured store ``DURAPIPE_MTHDS_METHODS`` replaces ``~/.mthds/methods``) and in the package's
declared dependencies, and never fetches: the address is compared with manifests, never used as a
path or a URL, so a bundle cannot make a worker read outside its stores or reach the network.

An ``@tag`` pins a version. The spec's packages are versioned by their repository's tags (a tag is
a version, its ``v`` prefix stripped: "distribution.md", "Version Tags"), and a manifest's
``version`` says which one a folder holds; Pipelex records the tag it fetched in ``.provenance.json``
beside the manifest. So a tagged address takes the installed copy that is that version (by its
manifest, or by the recorded tag), and a store holding only other versions is a mismatch, said
with both versions. (Pipelex warns and runs the other version; the spec's version resolution
fails when no version satisfies the constraint, and so does durapipe.)
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MANIFEST: Final = "METHODS.toml"
PROVENANCE: Final = ".provenance.json"  # what Pipelex fetched: address, tag, commit
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
    version: str = ""

    def is_version(self, tag: str) -> bool:
        """Whether this copy is the version ``tag`` pins: its manifest's ``version`` (the tag
        without its ``v``), or the tag Pipelex recorded when it fetched the copy."""
        if self.version and self.version == version_of(tag):
            return True
        return recorded_tag(self.manifest.parent) == tag


def address_key(reference: str) -> str:
    """The part before ``->`` as a key of the references to one package and version: lower
    case, with its ``@tag`` (see `split_address`)."""
    address, tag = split_address(reference)
    return f"{address}@{tag}" if tag else address


def split_address(reference: str) -> tuple[str, str | None]:
    """The part before ``->`` as compared with manifests (lower case, no ``@tag``), and its tag."""
    address, _, tag = reference.strip().partition("@")
    return address.strip().rstrip("/").lower(), tag.strip() or None


def version_of(tag: str) -> str:
    """The version a tag names: the spec strips a ``v`` prefix (``v1.0.0`` is ``1.0.0``)."""
    return tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag


def recorded_tag(folder: Path) -> str | None:
    """The tag Pipelex recorded when it fetched the package in ``folder``, if it did."""
    record = folder / PROVENANCE
    if not record.is_file() or record.is_symlink():
        return None
    try:
        tag = json.loads(record.read_text(encoding="utf-8")).get("tag")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None  # a hand-edited record says nothing: the manifest's version still does
    return tag if isinstance(tag, str) else None


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


def find_installed(
    key: str, stores: Sequence[Path], tag: str | None = None
) -> tuple[list[Installed], list[Installed]]:
    """The packages of the first store holding one that ``key`` names (several: ambiguous), and
    none of the others; with a ``tag``, of the first store holding that version, and the other
    versions found in every store when none does (a mismatch)."""
    others: list[Installed] = []
    for store in stores:
        found = [p for p in _packages(store) if matches(key, p.address, p.name)]
        if tag is not None:
            others += [p for p in found if not p.is_version(tag)]
            found = [p for p in found if p.is_version(tag)]
        if found:
            return found, []
    return [], others


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
            name, version = package.get("name"), package.get("version")
            yield Installed(
                manifest,
                package["address"],
                name if isinstance(name, str) else "",
                version if isinstance(version, str) else "",
            )


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
