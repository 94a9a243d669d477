"""The secrets of a secure local broker: a CA, the broker's certificate, the admin's password.

Made once per secrets directory and reused on every later start, so the admin credential
stored in the broker's metadata at format time keeps matching. Every private file is
written 0600 (`write_private`); a private file others may read is refused, not used.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from shared.errors import ConfigError
from shared.kafka.local.files import BrokerSecurity
from shared.security.pki import KeyPair, issue, new_ca, write_private

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
BROKER_KEYSTORE = "kafka-broker.pem"
ADMIN_PASSWORD = "kafka-admin.password"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
# A broker certificate closer than this to its end is issued anew at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)
_PASSWORD = re.compile("[A-Za-z0-9_-]{16,256}")


def broker_security(
    secrets_dir: Path,
    *,
    ca: KeyPair | None = None,
    hosts: Sequence[str] = LOCAL_HOSTS,
    admin_user: str = "admin",
    broker_name: str = "streamlearn-kafka-broker",
) -> BrokerSecurity:
    """What a secure `BrokerConfig` needs, created in `secrets_dir` when missing.

    Args:
        secrets_dir: Where the files live (created 0700).
        ca: The authority to issue the broker's certificate with; None: the one stored in
            `secrets_dir` (`ca.pem`, `ca.key`), created on first use.
        hosts: Names and addresses the broker's certificate is valid for.
        admin_user: The super user's SCRAM name.
        broker_name: The common name of the broker's certificate.

    Raises:
        ConfigError: A stored file is malformed, or a private one is readable by others.

    """
    authority = _authority(secrets_dir, ca)
    keystore = secrets_dir / BROKER_KEYSTORE
    if not _current(keystore, authority, hosts, broker_name):
        # Client too: the same certificate proves the broker on the controller listener.
        pair = issue(authority, broker_name, hosts=hosts, server=True, client=True)
        # The key first, then the chain: Kafka's PEM key store reads both from one file.
        write_private(keystore, pair.key + pair.cert + authority.cert)
    return BrokerSecurity(
        keystore=keystore,
        ca_file=secrets_dir / CA_CERT,
        admin_user=admin_user,
        admin_password=password_file(secrets_dir / ADMIN_PASSWORD),
        broker_name=broker_name,
    )


def password_file(path: Path) -> SecretStr:
    """The password stored in `path`, made (`secrets.token_urlsafe`, 0600) when missing.

    Raises:
        ConfigError: The file is readable by others or holds no usable password.

    """
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32).encode())
    text = read_private(path).decode("ascii", errors="replace").strip()
    if not _PASSWORD.fullmatch(text):
        raise ConfigError(f"{path} holds no usable password (16-256 of A-Z a-z 0-9 _ -)")
    return SecretStr(text)


def _authority(secrets_dir: Path, given: KeyPair | None) -> KeyPair:
    """The given CA (its certificate stored for clients), or the stored one, or a new one."""
    cert_path, key_path = secrets_dir / CA_CERT, secrets_dir / CA_KEY
    if given is not None:
        if not cert_path.exists() or cert_path.read_bytes() != given.cert:
            write_private(cert_path, given.cert)
        return given
    if not cert_path.exists() and not key_path.exists():
        made = new_ca()
        write_private(key_path, made.key)
        write_private(cert_path, made.cert)
        return made
    try:
        stored = KeyPair(cert_path.read_bytes(), read_private(key_path))
        _check_pair(stored)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the CA in {secrets_dir} is unusable: {exc}") from exc
    return stored


def _check_pair(pair: KeyPair) -> None:
    """Raise ValueError unless the key is the certificate's and both are PEM."""
    public = pair.certificate().public_key()
    key = pair.private_key()  # parses (raises ValueError) and is EC by construction
    if not isinstance(public, ec.EllipticCurvePublicKey) or public != key.public_key():
        raise ValueError("the key does not belong to the certificate")


def _current(keystore: Path, ca: KeyPair, hosts: Sequence[str], name: str) -> bool:
    """Whether the stored broker certificate can be kept: the CA's, for `hosts`, not expiring."""
    if not keystore.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificates(read_private(keystore))[0]
    except (ValueError, IndexError):  # damaged: issued anew
        return False
    try:
        cert.verify_directly_issued_by(ca.certificate())
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return False
    subject = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if [a.value for a in subject] != [name]:
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    covered = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    covered |= set(names.get_values_for_type(x509.DNSName))
    return all(_normal(host) in covered for host in hosts)


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def read_private(path: Path) -> bytes:
    """The bytes of a private file, refused when group or others may read it.

    Raises:
        ConfigError: The file is missing or its mode lets others read it.

    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{path} is missing ({exc.strerror})") from exc
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")
    return path.read_bytes()
