"""Bearer tokens: signed JWTs (EdDSA / Ed25519) and static tokens from a file.

A signed token carries `sub` (the principal), `roles`, `iat`, `exp`, `iss` and `aud`
("streamlearn"); servers hold only the public key. Static tokens suit a Kubernetes Secret:
the file holds the sha256 of each token, never the token, so reading it gives nothing away.

No error message here quotes a token: they end up in logs and in status details.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared.errors import ConfigError
from shared.security.identity import Principal, Unauthenticated
from shared.security.roles import unknown_roles

ISSUER = "streamlearn"
AUDIENCE = "streamlearn"
ALGORITHM = "EdDSA"
DEFAULT_TTL_S = 24 * 3600
# Longer than any token minted here; a bigger header is refused before any parsing.
MAX_TOKEN_CHARS = 8192
# Clock skew tolerated between the machine that minted a token and the one checking it.
LEEWAY_S = 30
_REQUIRED = ["sub", "roles", "iat", "exp", "iss", "aud"]
_SHA256_HEX = frozenset("0123456789abcdef")

# pyjwt's messages may quote pieces of the token: each failure gets a fixed message instead.
_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is meant for another audience"),
    (jwt.InvalidIssuerError, "the token was issued by someone else"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token is not signed with EdDSA"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.DecodeError, "the token is malformed"),
]


class InvalidToken(Unauthenticated):
    """A bearer token that is malformed, forged, expired or not for streamlearn."""


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair, both PEM: the private half mints tokens, the public verifies."""

    private: bytes
    public: bytes


def new_signing_key() -> SigningKey:
    """A fresh Ed25519 key pair for signing tokens."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(private, public)


def mint(
    private_key: bytes,
    subject: str,
    roles: Iterable[str],
    *,
    ttl_s: float = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    """A signed token proving `subject` holds `roles` for `ttl_s` seconds.

    Raises:
        ValueError: An empty subject, no role, an unknown role or a non-positive lifetime
            (a programming error of whoever mints).

    """
    held = sorted(set(roles))
    if not subject:
        raise ValueError("a token needs a subject")
    if not held or unknown_roles(held):
        raise ValueError(f"a token needs known roles, got {held} (unknown: {unknown_roles(held)})")
    if ttl_s <= 0:
        raise ValueError("a token's lifetime must be positive")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "roles": held,
        "iat": issued,
        "exp": issued + int(ttl_s),
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    key = serialization.load_pem_private_key(private_key, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("tokens are signed with an Ed25519 private key")
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def looks_signed(token: str) -> bool:
    """Whether `token` has the shape of a JWT (three dot-separated parts)."""
    return token.count(".") == 2


class TokenVerifier:
    """Checks signed tokens against one public key."""

    def __init__(self, public_key: bytes) -> None:
        """Load the verifying key.

        Raises:
            ConfigError: Not a PEM Ed25519 public key.

        """
        try:
            key = serialization.load_pem_public_key(public_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the token public key is not a PEM public key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError("the token public key must be an Ed25519 key")
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> TokenVerifier:
        """The verifier of the public key at `path` (PEM).

        Raises:
            ConfigError: The file cannot be read or holds no Ed25519 public key.

        """
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the token public key {path}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def verify(self, token: str) -> Principal:
        """The principal a token proves.

        Raises:
            InvalidToken: Malformed, badly signed, expired, not issued by or for
                streamlearn, or carrying a missing or unknown role.

        """
        _check_shape(token)
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": _REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        return _principal(claims)


def _check_shape(token: str) -> None:
    if not token:
        raise InvalidToken("the bearer token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken(f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii() or not token.isprintable():
        raise InvalidToken("the bearer token holds characters no token has")


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is invalid"


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject, roles = claims.get("sub"), claims.get("roles")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("the token's subject is not a name")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("the token's roles are not a list of names")
    try:
        return Principal.of(subject, roles, "the token")
    except Unauthenticated as exc:
        raise InvalidToken(str(exc)) from None


def new_static_token() -> str:
    """A random static token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The sha256 hex a static tokens file keys a token by."""
    return hashlib.sha256(token.encode()).hexdigest()


class StaticTokens:
    """Static tokens by their sha256: {"<hex>": {"principal": name, "roles": [...]}}."""

    def __init__(self, entries: Mapping[str, Principal]) -> None:
        self._entries = list(entries.items())

    @classmethod
    def parse(cls, text: str, source: str = "the static tokens file") -> StaticTokens:
        """Read the JSON document of a static tokens file.

        Raises:
            ConfigError: Not JSON, not an object of sha256 hex -> {principal, roles}, or an
                entry with an empty principal, no role or an unknown role.

        """
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{source} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{source} must be a JSON object of sha256 hex -> entry")
        entries: dict[str, Principal] = {}
        for index, (digest, entry) in enumerate(document.items()):
            entries[digest] = _static_entry(digest, entry, f"{source}, entry {index + 1}")
        return cls(entries)

    @classmethod
    def from_file(cls, path: Path) -> StaticTokens:
        """The static tokens of the file at `path`.

        Raises:
            ConfigError: The file cannot be read or is malformed.

        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the static tokens file {path}: {exc}") from None
        return cls.parse(text, f"the static tokens file {path}")

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal:
        """The principal of a static token.

        Every entry is compared in constant time, so timing tells nothing about the digests.

        Raises:
            InvalidToken: The token is malformed or not in the file.

        """
        _check_shape(token)
        digest = token_digest(token)
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise InvalidToken("the bearer token is not a known token")
        return found


def _static_entry(digest: Any, entry: Any, where: str) -> Principal:
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256_HEX):
        raise ConfigError(f"{where}: the key must be the sha256 of the token, 64 lowercase hex")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object {{'principal': ..., 'roles': [...]}}")
    principal, roles = entry.get("principal"), entry.get("roles")
    if not isinstance(principal, str) or not principal:
        raise ConfigError(f"{where}: 'principal' must be a non-empty string")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise ConfigError(f"{where}: 'roles' must be a non-empty list of role names")
    unknown = unknown_roles(roles)
    if unknown:
        raise ConfigError(f"{where}: unknown roles {unknown}")
    return Principal(principal, frozenset(roles))
