"""The proxy's local TLS: a throwaway CA and a server certificate, made per run.

Clients that ask for TLS get it (redshift_connector, JDBC and dbt ask by
default); clients that verify (``sslmode=verify-full``) are pointed at the CA
file the proxy names on startup. Nothing is reused across runs: the keys live
in a private (0700) directory that is removed when the proxy stops.
Needs the ``cryptography`` package (``pip install 'rsauth[proxy]'``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rsauth._errors import ConfigurationError

__all__ = ["LocalTls"]

_LIFETIME = datetime.timedelta(days=30)


class LocalTls:
    """A CA file (``ca_path``) and a server ``context`` for ``names`` (host names or IPs)."""

    def __init__(self, names: Iterable[str], directory: str | None = None) -> None:
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID
        except ImportError as exc:
            raise ConfigurationError(
                "the proxy's local TLS certificate needs the cryptography package: "
                "pip install 'rsauth[proxy]', or turn local TLS off (no_local_tls=True, "
                "--no-local-tls)"
            ) from exc
        self._owned = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="rsauth-proxy-"))
        os.chmod(self.directory, 0o700)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsauth proxy local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        sans: list[x509.GeneralName] = []
        for name in dict.fromkeys(["localhost", "127.0.0.1", "::1", *names]):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(ca_cert.public_bytes(pem))
        cert_path = self.directory / "server.pem"
        key_path = self.directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(pem))
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_path, key_path)
        # The key is in memory now; only the CA certificate stays on disk for clients.
        key_path.unlink()
        cert_path.unlink()

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
