"""Remote MTHDS dependencies, resolved from the local package cache only, and ``methods.lock``.

The spec fetches a remote dependency with Git into ``~/.mthds/packages/{address}/{version}/`` (the
cache; ``DURAPIPE_MTHDS_PACKAGES`` moves it). durapipe never fetches: it reads that cache, which
``mthds pkg install`` (or a copied, vendored folder) fills. ``methods.lock`` pins what it names: the
locked version is the one loaded, and its folder must hash to the locked ``hash`` (the spec's
algorithm). A dependency the lock does not name resolves to the lowest cached version that meets
its constraint (the spec's minimum version selection, over the versions the cache holds).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOCK_FILE: Final = "methods.lock"
_VERSION: Final = re.compile(r"^v?(\d+)(?:\.(\d+|\*))?(?:\.(\d+|\*))?(?:-[0-9A-Za-z.-]+)?$")
_CONSTRAINT: Final = re.compile(r"^(\^|~|>=|<=|==|!=|>|<)?\s*(.+)$")
_HASH: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
# hostname/path, as the manifest's own address; no '.' or '..' segment (it names a cache folder).
_ADDRESS: Final = re.compile(r"^[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+(/[a-zA-Z0-9._-]+)+$")

Version = tuple[int, int, int]


class DependencyError(Exception):
    """A remote dependency that cannot be resolved here: the message says which and what to do."""


@dataclass(frozen=True)
class Locked:
    """One entry of ``methods.lock``."""

    version: str
    hash: str
    source: str


def cache_dir() -> Path:
    """The MTHDS package cache: ``DURAPIPE_MTHDS_PACKAGES``, else ``~/.mthds/packages`` (the spec's)."""
    from durapipe._settings import settings

    configured = settings().mthds_packages
    return configured.expanduser() if configured else Path.home() / ".mthds" / "packages"


def read_lock(package: Path) -> tuple[dict[str, Locked], list[str]]:
    """The entries of the package's ``methods.lock`` (none when absent), and what is wrong with it."""
    path = package / LOCK_FILE
    if not path.is_file():
        return {}, []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        return {}, [f"not valid TOML: {err}"]
    entries: dict[str, Locked] = {}
    problems: list[str] = []
    for address, entry in data.items():
        if not isinstance(entry, dict):
            problems.append(f"'{address}' must be a table with version, hash and source")
            continue
        version, digest, source = entry.get("version"), entry.get("hash"), entry.get("source")
        if not isinstance(version, str) or _parse(version) is None:
            problems.append(f"'{address}': version {version!r} is not a semantic version")
        elif not isinstance(digest, str) or not _HASH.match(digest):
            problems.append(f"'{address}': hash {digest!r} must be sha256: and 64 hex digits")
        elif not isinstance(source, str) or not source.startswith("https://"):
            problems.append(f"'{address}': source {source!r} must be an https:// URL")
        else:
            entries[address] = Locked(version, digest, source)
    return entries, problems


def resolve_remote(alias: str, spec: dict[str, Any], lock: dict[str, Locked]) -> Path:
    """The cached folder of remote dependency ``alias`` (``address`` + ``version`` constraint).

    Raises:
        DependencyError: the dependency is not in the cache (durapipe does not fetch), the lock
            pins a version its constraint refuses, or the cached folder fails the lock's hash.
    """
    address, constraint = spec.get("address"), spec.get("version")
    if not isinstance(address, str) or not isinstance(constraint, str):
        raise DependencyError(
            f"remote dependency '{alias}' needs an address and a version constraint "
            '(address = "github.com/org/pkg", version = "^1.0.0"), or a local path'
        )
    if not _ADDRESS.match(address) or any(part in (".", "..") for part in address.split("/")):
        raise DependencyError(
            f"dependency '{alias}': '{address}' is not a package address (e.g. github.com/acme/legal-tools)"
        )
    try:
        accepts = _constraint(constraint)
    except ValueError as err:
        raise DependencyError(f"dependency '{alias}': {err}") from None
    folder = cache_dir() / address
    locked = lock.get(address)
    if locked is not None:
        pinned = _parse(locked.version)
        if pinned is None or not accepts(pinned):
            raise DependencyError(
                f"dependency '{alias}': {LOCK_FILE} pins {address} {locked.version}, which its "
                f"constraint '{constraint}' refuses; re-lock the package (mthds pkg lock)"
            )
        target = folder / locked.version
        if not target.is_dir():
            raise DependencyError(
                f"dependency '{alias}' ({address} {locked.version}, pinned by {LOCK_FILE}) is not "
                f"in the package cache {cache_dir()}, and durapipe does not fetch packages: run "
                "'mthds pkg install' where the source is reachable, or copy the package to "
                f"{target}"
            )
        actual = package_hash(target)
        if actual != locked.hash:
            raise DependencyError(
                f"dependency '{alias}': {target} does not match {LOCK_FILE} (hash {actual}, "
                f"locked {locked.hash}); the cached package was changed: install it again"
            )
        return target
    cached = sorted(
        (version, path)
        for path in (folder.iterdir() if folder.is_dir() else [])
        if path.is_dir() and (version := _parse(path.name)) is not None and accepts(version)
    )
    if not cached:
        raise DependencyError(
            f"dependency '{alias}' ({address} {constraint}) has no matching version in the "
            f"package cache {cache_dir()}, and durapipe does not fetch packages: run 'mthds pkg "
            f"install' where the source is reachable, copy the package to {folder}/<version>, "
            'or point at a local copy with path = "../folder"'
        )
    return cached[0][1]


def package_hash(folder: Path) -> str:
    """The spec's integrity hash: every file but ``.git``'s, by sorted POSIX path, path then bytes."""
    digest = hashlib.sha256()
    files = sorted(
        (path.relative_to(folder).as_posix(), path)
        for path in folder.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(folder).parts
    )
    for relative, path in files:
        digest.update(relative.encode("utf-8"))
        digest.update(path.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def _parse(text: str) -> Version | None:
    match = _VERSION.match(text.strip())
    if match is None or "*" in (match.group(2) or "", match.group(3) or ""):
        return None
    return int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0)


def _constraint(text: str) -> Any:
    """A test of versions for a constraint of the spec's syntax (``^1.2``, ``>=1, <2``, ``1.*``)."""
    tests = [_one(part.strip()) for part in text.split(",") if part.strip()]
    if not tests:
        raise ValueError(f"'{text}' is not a version constraint")
    return lambda version: all(test(version) for test in tests)


def _one(text: str) -> Any:
    if text == "*":
        return lambda v: True
    match = _CONSTRAINT.match(text)
    operator, rest = (match.group(1) or "", match.group(2)) if match else ("", text)
    parts = rest.split(".")
    if not _VERSION.match(rest) or "*" in parts[:-1]:
        raise ValueError(f"'{text}' is not a version constraint (e.g. ^1.0.0, >=1.2, 1.*)")
    numbers = [int(p) for p in parts if p != "*"]
    low = (*numbers, *[0] * (3 - len(numbers)))
    lower: Version = (low[0], low[1], low[2])
    if not operator and len(numbers) < 3:
        operator = "="  # a partial version is a wildcard: 1.0 is 1.0.*
    if operator == "=":
        return lambda v: v[: len(numbers)] == lower[: len(numbers)]
    if operator == "^":
        first = next((i for i, n in enumerate(lower) if n), 2)
        return lambda v: v >= lower and v[: first + 1] == lower[: first + 1]
    if operator == "~":
        return lambda v: v >= lower and v[:2] == lower[:2]
    comparisons = {
        "": lambda v: v == lower,
        "==": lambda v: v == lower,
        "!=": lambda v: v != lower,
        ">=": lambda v: v >= lower,
        "<=": lambda v: v <= lower,
        ">": lambda v: v > lower,
        "<": lambda v: v < lower,
    }
    return comparisons[operator]
