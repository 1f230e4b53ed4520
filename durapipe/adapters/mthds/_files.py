"""Document and Image inputs in MTHDS's format, made into blob references.

The spec gives an Image a ``url`` (or its bytes, ``base_64``) and a Document a ``url`` and a
``mime_type``. The protocol has no upload route, so a client sends a file as a ``data:`` URL, as
``base_64``, or as an ``http(s)`` URL. Who may read what is the caller's `FileAccess`: the CLI reads
the paths and URLs its user types; `durapipe serve` reads no path of its own disk and fetches only
the URL prefixes its operator allows. Workers never fetch a URL: a run carries blob references only.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any, Final

from durapipe._errors import ConfigError

DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
FETCH_TIMEOUT_S: Final = 20.0
_HTTP: Final = ("http://", "https://")
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class FileAccess:
    """Where the bytes of a Document or Image input may come from.

    Attributes:
        local_paths: a ``url`` that is a path is read from this machine's disk (the CLI's user's
            own files); False for a server, whose disk is not its clients'.
        url_prefixes: the ``http(s)`` URL prefixes that may be fetched (None: any; empty: none).
        max_bytes: the largest file accepted, fetched or decoded.
    """

    local_paths: bool = True
    url_prefixes: tuple[str, ...] | None = None
    max_bytes: int = DEFAULT_MAX_BYTES

    def allows(self, url: str) -> bool:
        """Whether ``url`` may be fetched: under one of the prefixes, read as URLs, not as text
        (``https://files.example.com`` allows no ``https://files.example.com.evil.net/``, no
        ``https://files.example.com@10.0.0.1/``, no other port, and no ``/ok/../other/``, which a
        server may resolve outside the prefix)."""
        if self.url_prefixes is None:
            return True
        return any(_under(url, prefix) for prefix in self.url_prefixes)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _under(url: str, prefix: str) -> bool:
    """Whether ``url`` has ``prefix``'s scheme, host and port, no user, no dot segment, and a
    path that starts with ``prefix``'s."""
    try:
        target, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
        origins = [
            (parts.scheme.lower(), parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme))
            for parts in (target, base)
        ]
    except ValueError:
        return False  # e.g. a port that is not a number
    segments = urllib.parse.unquote(target.path).replace("\\", "/").split("/")
    return (
        origins[0] == origins[1]
        and target.username is None
        and not {".", ".."} & set(segments)
        and target.path.startswith(base.path)
    )


CLI_ACCESS: Final = FileAccess()
SERVER_ACCESS: Final = FileAccess(local_paths=False, url_prefixes=())


def file_input(name: str, value: Any, access: FileAccess) -> Any:
    """The run value of Document/Image input ``name``: a blob reference (as JSON), or a `Path` for
    the run to upload (a local path the access allows); a blob reference passes as it is.

    Raises:
        ConfigError: the value names no file, or a file the access does not allow.
    """
    declared: str | None = None
    if isinstance(value, dict):
        if "blob" in value:
            return value  # already a durapipe blob reference
        declared = value.get("mime_type") if isinstance(value.get("mime_type"), str) else None
        if isinstance(value.get("base_64"), str) and not value.get("url"):
            return _stored(_base64(name, value["base_64"], access), declared, "")
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"input '{name}' must name a file: {{\"url\": ...}} (a data: URL, an http(s) URL) or, "
            'for an image, {"base_64": ...}'
        )
    if value.startswith("data:"):
        data, media_type = _data_url(name, value, access)
        return _stored(data, declared or media_type, "")
    if value.startswith(_HTTP):
        if not access.allows(value):
            allowed = ", ".join(access.url_prefixes or ()) or "none"
            raise ConfigError(
                f"input '{name}': this runner fetches no URL outside the prefixes its operator "
                f"allows ({allowed}); send the file's bytes as a data: URL, or ask the operator to "
                "allow the prefix (durapipe serve --allow-url)"
            )
        data, media_type = _fetch(name, value, access)
        filename = Path(urllib.parse.urlparse(value).path).name
        return _stored(data, declared or media_type, filename)
    scheme = _SCHEME.match(value)
    if scheme is not None and scheme.group(1) != "file":
        raise ConfigError(
            f"input '{name}': durapipe reads no '{scheme.group(1)}://' reference (it keeps no file storage "
            "of that kind); send the file's bytes as a data: URL"
        )
    if not access.local_paths:
        raise ConfigError(
            f"input '{name}': '{value}' is a path, and a client may not read this runner's disk; "
            'send the file\'s bytes as a data: URL ({"url": "data:application/pdf;base64,..."})'
        )
    return Path(value.removeprefix("file://"))


def _stored(data: bytes, declared: str | None, filename: str) -> dict[str, Any]:
    """``data`` put in the blob store: its media type sniffed, else declared, else guessed."""
    from durapipe.stores._blobs import blob_store, media_type_of

    media_type = media_type_of(data, filename)
    if media_type == "application/octet-stream" and declared:
        media_type = declared
    ref = blob_store().put(data, media_type=media_type, name=filename)
    return ref.model_dump(mode="json")


def _base64(name: str, text: str, access: FileAccess) -> bytes:
    if len(text) * 3 // 4 > access.max_bytes:
        raise ConfigError(f"input '{name}' passes the limit of {access.max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(f"input '{name}' is not valid Base64") from None


def _data_url(name: str, url: str, access: FileAccess) -> tuple[bytes, str | None]:
    """The bytes and media type of a ``data:[<type>][;base64],<data>`` URL (RFC 2397)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ConfigError(f"input '{name}' holds a data: URL with no comma before its data")
    parts = header.split(";")
    media_type = parts[0] or None
    if "base64" in parts[1:]:
        return _base64(name, payload, access), media_type
    data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > access.max_bytes:
        raise ConfigError(f"input '{name}' passes the limit of {access.max_bytes} bytes")
    return data, media_type


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere: it is refused, not followed (the prefix check holds)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


def _fetch(name: str, url: str, access: FileAccess) -> tuple[bytes, str | None]:
    """The bytes of ``url`` (one GET, no redirects, at most ``access.max_bytes``)."""
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(url, timeout=FETCH_TIMEOUT_S) as response:
            data: bytes = response.read(access.max_bytes + 1)
            media_type = response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        moved = " (redirects are not followed)" if 300 <= err.code < 400 else ""
        raise ConfigError(
            f"input '{name}': fetching {url} answered HTTP {err.code}{moved}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"input '{name}': {url} cannot be fetched ({reason})") from None
    if len(data) > access.max_bytes:
        raise ConfigError(f"input '{name}': {url} passes the limit of {access.max_bytes} bytes")
    if media_type in ("application/octet-stream", "text/plain") and not data.isascii():
        media_type = mimetypes.guess_type(url)[0] or media_type
    return data, media_type
