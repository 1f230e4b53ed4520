"""Self-signed certificates for serving the fake provider over ``https://`` in tests.

A real provider is reached over TLS; a test that wants the same path runs the fake provider with a
certificate made here, and tells the worker to trust it the way a user trusts a private CA:
``SSL_CERT_FILE=<cert_file>`` (litellm reads it; so does durapipe's held TLS, which takes litellm's
SSL settings).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate and its private key, as PEM files.

    The certificate is its own CA: a client that trusts ``cert_file`` trusts the server.
    """

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSL context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def self_signed_certificate(
    directory: str | Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> Certificate:
    """Make a self-signed certificate for ``hosts`` in ``directory`` (``cert.pem``, ``key.pem``).

    Example:
        ::

            certificate = self_signed_certificate(tmp_path)
            with FakeProvider(tls=certificate) as fake:  # fake.base_url is https://127.0.0.1:PORT/v1
                ...  # workers run with SSL_CERT_FILE=certificate.cert_file

    Args:
        directory: Where the two PEM files are written (created if missing).
        hosts: The names and IP addresses the certificate is valid for.

    Returns:
        The two files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "durapipe fake provider")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    ca_usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=False, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # A CA certificate, so OpenSSL accepts it as a trust anchor (VERIFY_X509_STRICT too).
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return Certificate(cert_file, key_file)
