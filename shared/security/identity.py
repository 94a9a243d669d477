"""Who is calling: a principal with roles, from a client certificate (or a token, see tokens).

The authenticated principal of the RPC being served is kept in a context variable by the
interceptor, so a servicer reads it with `current_principal()` (None when auth is off).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Re-exported: the security errors are domain errors, defined with the others.
from shared.errors import PermissionDenied as PermissionDenied
from shared.errors import Unauthenticated as Unauthenticated
from shared.security.roles import unknown_roles

# Actors the registry writes itself ("policy", "policy (reported by ...)").
RESERVED_NAMES = frozenset({"policy"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a name (token subject, certificate CN) and its roles."""

    name: str
    roles: frozenset[str]

    @classmethod
    def of(cls, name: str, roles: Iterable[str], source: str) -> Principal:
        """A principal whose name is set and whose roles are all known.

        Raises:
            Unauthenticated: An empty name, a reserved name, no role, or a role streamlearn
                does not know.

        """
        if not name:
            raise Unauthenticated(f"{source} names no principal")
        if name.split(" ", 1)[0] in RESERVED_NAMES:
            # The audit trail names the registry's own decisions so: nobody may pose as it.
            raise Unauthenticated(f"{source} names the reserved principal {name!r}")
        held = frozenset(roles)
        if not held:
            raise Unauthenticated(f"{source} of {name!r} carries no role")
        unknown = unknown_roles(held)
        if unknown:
            raise Unauthenticated(f"{source} of {name!r} carries unknown roles {unknown}")
        return cls(name, held)


_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "streamlearn_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being served; None when auth is off."""
    return _CURRENT.get()


def bind_principal(principal: Principal) -> contextvars.Token[Principal | None]:
    """Make `principal` the current one (the interceptor's job); reset with the token."""
    return _CURRENT.set(principal)


def unbind_principal(token: contextvars.Token[Principal | None]) -> None:
    """Undo `bind_principal` (server threads serve many calls)."""
    _CURRENT.reset(token)


def principal_from_certificate(pem: bytes) -> Principal:
    """The principal a verified client certificate proves: its CN, roles from its OUs.

    Only call with a certificate the TLS layer verified against the CA: the CA vouches for
    the roles it signed into the subject (`pki.issue(..., roles=[...])`).

    Raises:
        Unauthenticated: Not a certificate, not for client authentication, no CN or role,
            or an unknown role.

    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        usages = _extended_key_usages(cert)
    except Exception:  # any parser error (a duplicate extension, ...) alike
        raise Unauthenticated("the client certificate cannot be parsed") from None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise Unauthenticated("the client certificate is not for client authentication")
    name = str(names[0].value) if names else ""
    return Principal.of(name, (str(u.value) for u in units), "the client certificate")


def _extended_key_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    """The certificate's extended key usages; None when it does not restrict them."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return None
    return list(extension.value)
