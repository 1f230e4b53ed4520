"""Where and how to reach Temporal: address, namespace, TLS/mTLS and API keys.

Settings come, in order of precedence, from explicit values (CLI flags), the environment and a
``temporal.toml`` profile, read by the SDK's `temporalio.envconfig` exactly as the temporal CLI reads
them: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS``,
``TEMPORAL_TLS_CLIENT_CERT_PATH``, ``TEMPORAL_TLS_CLIENT_KEY_PATH``,
``TEMPORAL_TLS_SERVER_CA_CERT_PATH``, ``TEMPORAL_TLS_SERVER_NAME``, ``TEMPORAL_PROFILE`` and
``TEMPORAL_CONFIG_FILE``. How messages are compressed (``gzip``, the SDK's default, or ``none``) is
durapipe's own setting, ``DURAPIPE_GRPC_COMPRESSION``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfigProfile
from temporalio.service import GrpcCompression, TLSConfig

from durapipe._errors import ConfigError
from durapipe._settings import GRPC_COMPRESSIONS, settings

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
# The variables the SDK's envconfig reads the address from (named here in sentences about it).
ADDRESS_ENV = "TEMPORAL_ADDRESS"
PROFILE_ENV = "TEMPORAL_PROFILE"
CONFIG_FILE_ENV = "TEMPORAL_CONFIG_FILE"


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach a Temporal cluster; unset fields fall back to the environment and profile.

    Attributes:
        address: the frontend ``host:port``.
        namespace: the namespace.
        api_key: an API key (Temporal Cloud); implies TLS.
        tls: force TLS on (True) or off (False); None lets the other settings decide.
        tls_cert: the client certificate (PEM file) for mTLS.
        tls_key: the client certificate's private key (PEM file) for mTLS.
        tls_ca: the CA that signed the server's certificate (PEM file); the system's by default.
        tls_server_name: the name to verify the server's certificate against (SNI).
        profile: the profile of the ``temporal.toml`` file to use.
        config_file: the ``temporal.toml`` file [default: the temporal CLI's].
        grpc_compression: ``gzip`` or ``none`` [default: ``DURAPIPE_GRPC_COMPRESSION``, else
            gzip]. Compressing every message costs a worker about a tenth of its CPU (measured on
            a batch, README Benchmark); ``none`` saves it where the cluster is near and bandwidth
            cheap, and sends payloads larger on the wire.

    Example:
        >>> ConnectOptions(address="my-ns.a1b2c.tmprl.cloud:7233", namespace="my-ns.a1b2c",
        ...                api_key="...")  # doctest: +SKIP
    """

    address: str | None = None
    namespace: str | None = None
    # repr=False: options end up in log lines, tracebacks and debugger output; a key must not.
    api_key: str | None = field(default=None, repr=False)
    tls: bool | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    profile: str | None = None
    config_file: Path | None = None
    grpc_compression: str | None = None

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for ``Client.connect``: flags over environment over profile.

        Raises:
            ConfigError: the profile cannot be loaded, or a certificate file cannot be read.
        """
        try:
            loaded = ClientConfigProfile.load(
                self.profile, config_source=self.config_file
            ).to_client_connect_config()
        except Exception as err:  # the SDK reports a bad file or profile as a RuntimeError
            raise ConfigError(f"cannot load the Temporal client configuration: {err}") from None
        config: dict[str, Any] = dict(loaded)
        config["target_host"] = _host_port(
            self.address or config.get("target_host") or DEFAULT_ADDRESS,
            self._address_source(config.get("target_host")),
        )
        config["namespace"] = self.namespace or config.get("namespace") or DEFAULT_NAMESPACE
        if self.api_key:
            config["api_key"] = self.api_key
            config.setdefault("tls", True)
        tls = self._tls(config.get("tls", False))
        if tls is not None:
            config["tls"] = tls
        compression = self._compression()
        if compression is not None:
            config["grpc_compression"] = compression
        return config

    def _address_source(self, loaded: str | None) -> _Source:
        """Where the address came from, so a sentence about it names what to change."""
        if self.address or not loaded:
            return _FLAG
        # The SDK lets the variable override the profile, as the temporal CLI does.
        if os.environ.get(ADDRESS_ENV, "").strip():
            return _Source(ADDRESS_ENV + " '{}'", ADDRESS_ENV + "={}")
        profile = self.profile or os.environ.get(PROFILE_ENV) or "default"
        file = self.config_file or os.environ.get(CONFIG_FILE_ENV) or "temporal.toml"
        return _Source(f"the address '{{}}' of profile '{profile}' in {file}", 'address = "{}"')

    def _compression(self) -> GrpcCompression | None:
        chosen = self.grpc_compression or settings().grpc_compression
        if chosen is None:
            return None
        if chosen.strip().lower() not in GRPC_COMPRESSIONS:
            raise ConfigError(f"--grpc-compression must be gzip or none, not {chosen!r}")
        return GrpcCompression.NONE if chosen.strip().lower() == "none" else GrpcCompression.GZIP

    def _tls(self, loaded: bool | TLSConfig) -> bool | TLSConfig | None:
        files = {"tls_cert": self.tls_cert, "tls_key": self.tls_key, "tls_ca": self.tls_ca}
        if self.tls is False:
            return False
        if not any(files.values()) and not self.tls_server_name:
            return True if self.tls else None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("mTLS needs both --tls-cert-path and --tls-key-path (or neither)")
        base = loaded if isinstance(loaded, TLSConfig) else TLSConfig()
        return TLSConfig(
            server_root_ca_cert=_read(self.tls_ca, "--tls-ca-path") or base.server_root_ca_cert,
            client_cert=_read(self.tls_cert, "--tls-cert-path") or base.client_cert,
            client_private_key=_read(self.tls_key, "--tls-key-path") or base.client_private_key,
            domain=self.tls_server_name or base.domain,
        )


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag}: cannot read '{path}': {err.strerror}") from None


@dataclass(frozen=True)
class _Source:
    """Where an address came from, for the sentence about it: how it is named (``{}`` the
    address as given) and how it is written there (``{}`` the address to write)."""

    named: str
    spelling: str


_FLAG = _Source("address '{}'", "--address {}")


def _host_port(address: str, source: _Source | None = None) -> str:
    """The address as given, once it is the ``host:port`` Temporal takes.

    The SDK takes ``http://host:port`` with only a warning (and a future error), and a host without
    a port as port 80, where nothing answers: a URL copied from a browser, or a bare host, is one
    sentence here instead, naming where the address came from (``source``: the flag by default).

    Raises:
        ConfigError: a scheme before the host, or no port.
    """
    source = source or _FLAG
    named = source.named.replace("{}", address, 1)
    scheme, found, rest = address.partition("://")
    if found:
        raise ConfigError(
            f"{named} is not host:port: leave out '{scheme}://' "
            f"({source.spelling.replace('{}', rest.rstrip('/'))})"
        )
    if not re.search(r":\d+$", address):
        raise ConfigError(
            f"{named} has no port: write host:port "
            f"({source.spelling.replace('{}', address + ':7233')}, the dev server's default port)"
        )
    return address
