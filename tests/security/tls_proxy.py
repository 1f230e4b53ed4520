"""Test certificates (made with `cryptography`) and nginx terminating TLS in front of the dev server.

The dev server has no TLS flags, so TLS and mTLS are tested for real by putting nginx with
``grpc_pass`` between the clients and the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from durapipe.ops._dev import free_port


def nginx_binary() -> str | None:
    """nginx from Debian's package (installed by `make test-tools`), or None."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@dataclass
class Pki:
    """PEM files of a CA, a server certificate for localhost and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA: the proxy must refuse it
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_pki(folder: Path) -> Pki:
    """A fresh CA, a server certificate for localhost/127.0.0.1, and client certificates."""
    ca_key, other_ca_key = _key(), _key()
    ca = _cert("durapipe test CA", ca_key, None, ca=True)
    other_ca = _cert("someone else's CA", other_ca_key, None, ca=True)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _write(
        folder,
        "server",
        _cert("localhost", server_key, (ca.subject, ca_key), server=True),
        server_key,
    )
    client = _write(folder, "client", _cert("worker", client_key, (ca.subject, ca_key)), client_key)
    stranger = _write(
        folder,
        "stranger",
        _cert("stranger", stranger_key, (other_ca.subject, other_ca_key)),
        stranger_key,
    )
    return Pki(ca_path, *server, *client, *stranger)


_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        {client_auth}
        # Workers long-poll for tasks for up to a minute: longer than nginx's 60s default.
        grpc_read_timeout 300s;
        grpc_send_timeout 300s;
        client_max_body_size 0;
        location / {{ grpc_pass grpc://{upstream}; }}
    }}
}}
"""


class TlsProxy:
    """nginx on a free port: TLS (or mTLS when ``mutual``) outside, plain gRPC to ``upstream``."""

    def __init__(self, folder: Path, pki: Pki, upstream: str, *, mutual: bool) -> None:
        binary = nginx_binary()
        assert binary, "nginx is not installed (make test-tools)"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        client_auth = (
            f"ssl_client_certificate {pki.ca};\n        ssl_verify_client on;" if mutual else ""
        )
        config = folder / "nginx.conf"
        config.write_text(
            _CONFIG.format(
                folder=folder, port=self.port, pki=pki, client_auth=client_auth, upstream=upstream
            )
        )
        self.log = folder / "error.log"
        self.process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(config), "-e", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(
                    f"nginx did not start: {err} {self.log.read_text() if self.log.exists() else ''}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
