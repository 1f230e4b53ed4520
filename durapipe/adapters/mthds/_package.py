"""Finding and reading bundles: one `.mthds` file, bundle text, or a package folder with
`METHODS.toml` (its bundles, exports, local path dependencies, and remote dependencies from the
package cache, pinned by `methods.lock`: see `_remote`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from durapipe._errors import Problem
from durapipe.adapters.mthds._bundle import Bundle, parse_bundle
from durapipe.adapters.mthds._installed import (
    PROJECT_STORE,
    Installed,
    address_key,
    configured_stores,
    find_installed,
    matches,
    split_address,
    stores_for,
    version_of,
)
from durapipe.adapters.mthds._library import RESERVED_DOMAINS, Library
from durapipe.adapters.mthds._remote import (
    LOCK_FILE,
    DependencyError,
    Locked,
    read_lock,
    resolve_remote,
)

MANIFEST = "METHODS.toml"
_ADDRESS = re.compile(r"^[a-zA-Z0-9._-]+\.[a-zA-Z0-9._-]+/[a-zA-Z0-9._/-]+$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


def find_manifest(bundle: Path) -> Path | None:
    """The `METHODS.toml` governing ``bundle``: walk up to a `.git` folder or the root."""
    current = bundle.resolve().parent
    while True:
        if (current / MANIFEST).is_file():
            return current / MANIFEST
        if (current / ".git").exists() or current.parent == current:
            return None
        current = current.parent


def load_text(
    text: str, source: str, *, methods: Sequence[Path] | None = None
) -> tuple[Library, list[Problem]]:
    """A standalone library of one bundle given as TOML text (package addresses before ``->``
    resolve from ``methods``, else the configured stores: `_installed`)."""
    bundle, problems = parse_bundle(text, source)
    library = Library(bundles=[bundle])
    stores = list(methods) if methods is not None else configured_stores()
    problems += _by_address(library, stores, {})
    return library, problems


def load_path(
    path: Path, *, methods: Sequence[Path] | None = None
) -> tuple[Library, list[Problem]]:
    """The library of a `.mthds` file (its package's, when a `METHODS.toml` governs it) or a
    package folder; ``methods``: the folders of installed methods package addresses resolve
    from (default: the configured stores), after the package's own ``.mthds/methods/``."""
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            return Library(), [Problem("package", f"folder '{path}' has no {MANIFEST}", str(path))]
        return load_package(manifest, alias="", root=True, methods=methods)
    governing = find_manifest(path)
    if governing is None:
        bundle, problems = parse_bundle(path.read_text(encoding="utf-8"), str(path))
        library = Library(bundles=[bundle])
        problems += _by_address(library, stores_for(path.resolve().parent, methods), {})
        return library, problems
    return load_package(governing, alias="", root=True, methods=methods)


def load_package(
    manifest: Path,
    *,
    alias: str,
    root: bool,
    lock: dict[str, Locked] | None = None,
    stack: frozenset[str] = frozenset(),
    methods: Sequence[Path] | None = None,
    stores: list[Path] | None = None,
) -> tuple[Library, list[Problem]]:
    """Every bundle under the manifest's folder, with the manifest's exports, (for the root
    package only, as the spec says) its local path dependencies, its remote dependencies
    (transitively) from the package cache, as the root's ``methods.lock`` pins them, and the
    packages its bundles name by address from installed methods (`_installed`)."""
    source = str(manifest)
    if stores is None:
        stores = stores_for(manifest.parent.resolve(), methods)
    problems: list[Problem] = []
    if root:
        lock, lock_problems = read_lock(manifest.parent)
        problems += [
            Problem(LOCK_FILE, message, str(manifest.parent / LOCK_FILE))
            for message in lock_problems
        ]
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        return Library(alias=alias), [Problem("METHODS.toml", f"not valid TOML: {err}", source)]
    library = Library(alias=alias, exports=set())
    problems += _check_manifest(data, source)
    package = data.get("package", {}) if isinstance(data.get("package"), dict) else {}
    library.address = str(package.get("address", ""))
    library.name = str(package.get("name", "") or "")
    library.version = str(package.get("version", "") or "")
    library.main_pipe = (
        package.get("main_pipe") if isinstance(package.get("main_pipe"), str) else None
    )
    assert library.exports is not None
    for domain, pipes in _walk_exports(data.get("exports", {}), ""):
        library.exports |= {(domain, code) for code in pipes}
    folder = manifest.parent
    for file in sorted(folder.rglob("*.mthds")):
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        bundle, found = parse_bundle(file.read_text(encoding="utf-8"), str(file))
        library.bundles.append(bundle)
        problems += found
    deps = data.get("dependencies", {})
    if isinstance(deps, dict):
        for dep_alias, spec in deps.items():
            where = f"METHODS.toml, dependency '{dep_alias}'"
            if not isinstance(spec, dict):
                problems.append(
                    Problem(where, "must be a table with address, version (and path)", source)
                )
                continue
            if "path" in spec:
                if not root:
                    continue  # local path dependencies are not transitive (spec)
                dep_manifest = (folder / str(spec["path"])) / MANIFEST
            else:
                address = str(spec.get("address"))
                if address in stack:
                    problems.append(
                        Problem(where, f"'{address}' depends on itself (a cycle)", source)
                    )
                    continue
                try:
                    dep_manifest = resolve_remote(dep_alias, spec, lock or {}) / MANIFEST
                except DependencyError as err:
                    problems.append(Problem(where, str(err), source))
                    continue
            if not dep_manifest.is_file():
                problems.append(Problem(where, f"no {MANIFEST} at '{dep_manifest}'", source))
                continue
            dep, found = load_package(
                dep_manifest,
                alias=dep_alias,
                root=False,
                lock=lock,
                stack=stack | {str(spec.get("address"))},
                stores=stores,
            )
            library.deps[dep_alias] = dep
            problems += found
    own = {address_key(library.address), address_key(f"{library.address}/{library.name}")}
    problems += _by_address(library, stores, lock or {}, stack | own)
    for domain, code in sorted(library.exports):
        if library.pipe(domain, code) is None:
            # Pipelex loads and runs such a package (its visibility check only looks exports up);
            # only `pipelex pkg publish` refuses it. An export nothing defines lets nothing in.
            library.notes.append(
                Problem(
                    f"METHODS.toml, [exports.{domain}]",
                    f"exports '{code}', which no bundle of domain '{domain}' defines: nothing "
                    "outside the package can call it (Pipelex runs such a package too, and "
                    "refuses it only when publishing)",
                    source,
                )
            )
    if library.main_pipe and not any(code == library.main_pipe for _, code in library.exports):
        problems.append(
            Problem(
                "METHODS.toml, field 'main_pipe'",
                f"'{library.main_pipe}' must be listed in [exports]",
                source,
            )
        )
    return library, problems


_REFERENCE: Final = re.compile(
    r"^(?P<address>[A-Za-z0-9._~/-]+/[A-Za-z0-9._~/-]+(@[\w.-]+)?)->\S+$"
)


def _addresses(bundle: Bundle) -> Iterator[str]:
    """Every package address a bundle writes before ``->`` (a pipe or concept reference)."""
    values: list[Any] = [
        *(pipe.model_dump(by_alias=True) for pipe in bundle.pipes.values()),
        *(concept.model_dump() for concept in bundle.concepts.values()),
    ]
    while values:
        value = values.pop()
        if isinstance(value, dict):
            values += [*value.values()]
        elif isinstance(value, list):
            values += value
        elif isinstance(value, str) and (match := _REFERENCE.match(value.strip())):
            yield match.group("address")


def _by_address(
    library: Library,
    stores: Sequence[Path],
    lock: dict[str, Locked],
    stack: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Load the packages ``library``'s bundles name by address: a declared dependency with that
    address, else an installed method in ``stores``; a miss is recorded in ``unresolved`` (the
    reference reports it, at its line)."""
    problems: list[Problem] = []
    loaded: dict[Path, Library] = {}  # one installed package named with and without its tag
    written = sorted({a for bundle in library.bundles for a in _addresses(bundle)})
    for address in written:
        key = address_key(address)
        if key in library.by_address or key in library.unresolved:
            continue
        bare, tag = split_address(address)
        declared = [d for d in library.deps.values() if matches(bare, d.address, d.name)]
        if declared:
            dep = declared[0]
            if tag is not None and dep.version and dep.version != version_of(tag):
                library.unresolved[key] = (
                    f"package '{address}' pins version {version_of(tag)}, but dependency "
                    f"'{dep.alias}' (METHODS.toml [dependencies], that address) is version "
                    f"{dep.version}: make the two agree"
                )
                continue
            library.by_address[key] = dep
            continue
        if bare in stack:
            library.unresolved[key] = f"package '{address}' refers to itself by its address"
            continue
        found, others = find_installed(bare, stores, tag)
        if len(found) > 1:
            library.unresolved[key] = (
                f"package address '{address}' names {len(found)} installed methods "
                f"({', '.join(str(p.manifest.parent) for p in found)}): add the method name "
                "(address/name) or keep one"
            )
            continue
        if not found:
            library.unresolved[key] = (
                _other_version(address, others) if others else _missing(address, stores)
            )
            continue
        if found[0].manifest in loaded:
            library.by_address[key] = loaded[found[0].manifest]
            continue
        taken = {*library.deps, *(d.alias for d in library.by_address.values())}
        alias = _free_alias(found[0].name or bare.rpartition("/")[2], taken)
        dep, more = load_package(
            found[0].manifest,
            alias=alias,
            root=False,
            lock=lock,
            stack=stack | {bare},
            stores=list(stores),
        )
        library.by_address[key] = loaded[found[0].manifest] = dep
        problems += more
    return problems


def _other_version(address: str, others: Sequence[Installed]) -> str:
    """A tagged address whose version no store holds, though others are installed."""
    tag = split_address(address)[1] or ""
    installed = ", ".join(f"{p.manifest.parent}: version {p.version or 'unknown'}" for p in others)
    return (
        f"package '{address}' pins version {version_of(tag)}, but only other versions of it are "
        f"installed here ({installed}), and durapipe does not fetch packages: install version "
        f"{version_of(tag)} into a folder of installed methods where the source is reachable, or "
        f"drop '@{tag}' to run the installed version"
    )


def _missing(address: str, stores: Sequence[Path]) -> str:
    where = ", ".join(str(store) for store in stores)
    return (
        f"package '{address}' is not installed here (looked in {where}), and durapipe does not "
        f"fetch packages: install it where the source is reachable (mthds install), copy its "
        f"folder into {PROJECT_STORE} beside METHODS.toml or into a folder named by --methods "
        "or DURAPIPE_MTHDS_METHODS, or declare it in METHODS.toml [dependencies] with a local path"
    )


def _free_alias(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_") or "package"
    alias, n = base, 1
    while alias in taken:
        n += 1
        alias = f"{base}_{n}"
    return alias


def _walk_exports(table: Any, prefix: str) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    if not isinstance(table, dict):
        return found
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        path = f"{prefix}.{key}" if prefix else key
        pipes = value.get("pipes")
        if isinstance(pipes, list):
            found.append((path, [str(p) for p in pipes]))
        found += _walk_exports({k: v for k, v in value.items() if k != "pipes"}, path)
    return found


def _check_manifest(data: dict[str, Any], source: str) -> list[Problem]:
    problems: list[Problem] = []

    def report(where: str, message: str) -> None:
        problems.append(Problem(f"METHODS.toml, {where}", message, source))

    package = data.get("package")
    if not isinstance(package, dict):
        report("[package]", "the [package] section is required")
        return problems
    name = package.get("name")
    if name is not None and (
        not isinstance(name, str) or not _SNAKE.match(name) or not 2 <= len(name) <= 25
    ):
        report("field 'name'", f"{name!r} must be snake_case, 2 to 25 characters")
    address = package.get("address")
    if not isinstance(address, str) or not _ADDRESS.match(address):
        report(
            "field 'address'",
            f"{address!r} is not a package address (e.g. github.com/acme/legal-tools)",
        )
    version = package.get("version")
    if not isinstance(version, str) or not _SEMVER.match(version):
        report("field 'version'", f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    if not isinstance(package.get("description"), str) or not package["description"].strip():
        report("field 'description'", "must not be empty")
    deps = data.get("dependencies", {})
    for alias in deps if isinstance(deps, dict) else {}:
        if not _SNAKE.match(alias):
            report(f"dependency '{alias}'", "a dependency alias must be snake_case")
    for domain, pipes in _walk_exports(data.get("exports", {}), ""):
        if not _DOMAIN.match(domain):
            report(f"[exports.{domain}]", f"'{domain}' is not a domain code")
        elif domain.split(".")[0] in RESERVED_DOMAINS:
            report(f"[exports.{domain}]", f"'{domain}' starts with a reserved domain")
        for code in pipes:
            if not _SNAKE.match(code):
                report(f"[exports.{domain}]", f"'{code}' is not a snake_case pipe code")
    return problems
