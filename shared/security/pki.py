"""A small private PKI: one CA, server and client certificates issued by it (PEM).

`streamlearn up --secure` makes one per state directory; production mounts its own (for
example from cert-manager). Keys are ECDSA P-256: fast to make, and accepted by gRPC, Kafka's
JVM and librdkafka alike.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.security.roles import unknown_roles

DEFAULT_DAYS = 397  # the longest validity browsers accept for a leaf; rotation is a re-run
CA_DAYS = 3650
# Certificates start a few minutes in the past: clocks of the machines that check them differ.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes

    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The parsed private key."""
        key = serialization.load_pem_private_key(self.key, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # only ever made by this module
        return key

    def encrypted_key(self, password: bytes) -> bytes:
        """The key as encrypted PKCS#8 PEM (what Kafka's PEM key stores read)."""
        return self.private_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )


def new_ca(common_name: str = "streamlearn local CA", days: int = CA_DAYS) -> KeyPair:
    """A self-signed certificate authority that may only sign end-entity certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_pem_cert(cert), _pem_key(key))


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = DEFAULT_DAYS,
    roles: Sequence[str] = (),
) -> KeyPair:
    """A certificate for `common_name` signed by `ca`.

    Args:
        ca: The issuing authority.
        common_name: The subject; for a client certificate, the principal it proves.
        hosts: DNS names and IP addresses the certificate is valid for (servers).
        server: May authenticate a TLS server.
        client: May authenticate a TLS client (mutual TLS).
        days: Validity.
        roles: streamlearn roles the holder has, one subject OU each (client certificates;
            the CA's signature is what makes a server trust them).

    Raises:
        ValueError: Neither `server` nor `client`, a server certificate without hosts, or
            roles on a certificate that is not for a client, or unknown roles.

    """
    if not (server or client):
        raise ValueError("a certificate must be for a server, a client or both")
    if server and not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    if roles and not client:
        raise ValueError("roles only mean something in a client certificate")
    if unknown_roles(roles):
        raise ValueError(f"unknown roles {unknown_roles(roles)}")
    key = ec.generate_private_key(ec.SECP256R1())
    authority = ca.certificate()
    now = datetime.datetime.now(datetime.UTC)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name, roles))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    cert = builder.sign(ca.private_key(), hashes.SHA256())
    return KeyPair(_pem_cert(cert), _pem_key(key))


def write_private(path: Path, data: bytes) -> Path:
    """Write `data` readable by its owner only (0600 from creation, not chmod-ed after)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    temporary.replace(path)
    return path


def _subject(common_name: str, roles: Sequence[str]) -> x509.Name:
    """CN = the principal, then one OU per role (sorted: the same roles, the same name)."""
    units = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r) for r in sorted(set(roles))]
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), *units])


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
