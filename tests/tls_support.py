"""Certificates made in the tests, with ``cryptography``: a CA, server and client certificates it
signs, PEM files on disk, and TLS contexts for serving and connecting.

Keys are EC P-256: generating them is instant, so every test can have its own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "TestCA",
    "client_context",
    "serial_of",
    "serve_tls_app",
    "server_context",
    "write_pem",
]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, name: str) -> tuple[str, str]:
        """``name.crt`` and ``name.key`` in ``directory``; returns their paths."""
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        write_pem(cert_path, self.cert_pem())
        write_pem(key_path, self.key_pem())
        return str(cert_path), str(key_path)


def write_pem(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (temporary file + rename), as cert-manager's writers do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    """A self-signed certificate authority that issues server and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, common_name: str = "jwksgate test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "ca") -> str:
        path = directory / f"{name}.crt"
        write_pem(path, self.cert_pem())
        return str(path)

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName],
        serial: int | None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def server_cert(self, serial: int | None = None) -> Issued:
        """For IP 127.0.0.1 and DNS localhost."""
        san: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]
        return self._issue("localhost", ExtendedKeyUsageOID.SERVER_AUTH, san, serial)

    def client_cert(self, common_name: str = "jwksgate", serial: int | None = None) -> Issued:
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], serial)


def server_context(
    cert_file: str, key_file: str, *, client_ca_file: str | None = None
) -> ssl.SSLContext:
    """A serving context; with ``client_ca_file`` every client must present a certificate
    signed by that CA (the handshake fails otherwise)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts only the test CA (and checks the host name)."""
    return ssl.create_default_context(cafile=ca_file)


def serial_of(der: bytes | None) -> int:
    """The serial number of a DER certificate (``getpeercert(binary_form=True)``)."""
    assert der is not None, "no peer certificate"
    return x509.load_der_x509_certificate(der).serial_number


@asynccontextmanager
async def serve_tls_app(app: web.Application, ctx: ssl.SSLContext) -> AsyncIterator[str]:
    """Serve ``app`` over https on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()
