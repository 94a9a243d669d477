"""Bearer tokens: signed JWTs (round trip, every way to be invalid, fuzzed) and static tokens."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.security import pki
from shared.security.identity import Principal
from shared.security.tokens import (
    AUDIENCE,
    ISSUER,
    InvalidToken,
    SigningKey,
    StaticTokens,
    TokenVerifier,
    mint,
    new_signing_key,
    new_static_token,
    token_digest,
)

KEY = new_signing_key()
VERIFIER = TokenVerifier(KEY.public)


def signed(claims: dict[str, Any], key: SigningKey = KEY, algorithm: str = "EdDSA") -> str:
    """A token with exactly `claims`, signed as streamlearn signs (or not)."""
    private = serialization.load_pem_private_key(key.private, password=None)
    return jwt.encode(claims, private, algorithm=algorithm)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_raw(body: Any, key: SigningKey = KEY) -> str:
    """A correctly signed EdDSA token around any JSON payload (pyjwt's encoder refuses some)."""
    private = serialization.load_pem_private_key(key.private, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    head = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(body).encode())
    return f"{head}.{payload}.{_b64(private.sign(f'{head}.{payload}'.encode()))}"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "roles": ["reader"],
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_the_hand_made_signature_is_the_real_one() -> None:
    assert VERIFIER.verify(signed_raw(claims())) == Principal("alice", frozenset({"reader"}))


def test_a_minted_token_proves_its_subject_and_roles() -> None:
    token = mint(KEY.private, "trainer-1", ["trainer", "reader"])
    assert VERIFIER.verify(token) == Principal("trainer-1", frozenset({"trainer", "reader"}))
    decoded = jwt.decode(token, options={"verify_signature": False})
    assert decoded["iss"] == decoded["aud"] == "streamlearn"
    assert decoded["exp"] > decoded["iat"]
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_an_expired_token_is_refused() -> None:
    token = mint(KEY.private, "alice", ["reader"], ttl_s=60, now=time.time() - 3600)
    with pytest.raises(InvalidToken, match="expired"):
        VERIFIER.verify(token)


def test_a_token_signed_by_another_key_is_refused() -> None:
    token = mint(new_signing_key().private, "alice", ["admin"])
    with pytest.raises(InvalidToken, match="signature"):
        VERIFIER.verify(token)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "someone-else"}, "issued by someone else"),
        ({"roles": ["root"]}, "unknown roles"),
        ({"roles": []}, "no role"),
        ({"roles": "admin"}, "not a list"),
        ({"roles": [1, 2]}, "not a list"),
        ({"sub": ""}, "subject"),
        ({"sub": 7}, "invalid|subject|malformed"),
        ({"exp": None}, "lacks a required claim"),
        ({"roles": None}, "lacks a required claim"),
        ({"iat": time.time() + 3600}, "not valid yet"),
    ],
)
def test_a_token_not_for_streamlearn_is_refused(changes: dict[str, Any], reason: str) -> None:
    token = signed(claims(**changes))
    with pytest.raises(InvalidToken, match=reason):
        VERIFIER.verify(token)


def test_a_tampered_token_is_refused() -> None:
    header, payload, signature = mint(KEY.private, "alice", ["reader"]).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        VERIFIER.verify(f"{header}.{forged}.{signature}")


def test_unsigned_and_symmetric_tokens_are_refused() -> None:
    with pytest.raises(InvalidToken, match="EdDSA"):
        VERIFIER.verify(jwt.encode(claims(roles=["admin"]), "", algorithm="none"))
    # The classic confusion: HMAC keyed with the (public) verifying key.
    hmac_token = jwt.encode(claims(roles=["admin"]), "x" * 64, algorithm="HS256")
    with pytest.raises(InvalidToken, match="EdDSA"):
        VERIFIER.verify(hmac_token)


def test_refusals_never_quote_the_token() -> None:
    token = signed(claims(aud="elsewhere"))
    with pytest.raises(InvalidToken) as raised:
        VERIFIER.verify(token)
    for part in token.split("."):
        assert part not in str(raised.value)


@pytest.mark.parametrize(
    ("subject", "roles", "ttl"),
    [("", ["reader"], 60), ("a", [], 60), ("a", ["root"], 60), ("a", ["reader"], 0)],
)
def test_minting_refuses_what_no_server_would_accept(
    subject: str, roles: list[str], ttl: float
) -> None:
    with pytest.raises(ValueError):
        mint(KEY.private, subject, roles, ttl_s=ttl)


def test_the_verifying_key_must_be_an_ed25519_public_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a PEM public key"):
        TokenVerifier(b"garbage")
    ec_public = pki.issue(pki.new_ca(), "x", client=True).certificate().public_key()
    pem = ec_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        TokenVerifier(pem)
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier.from_file(tmp_path / "missing.pem")
    (tmp_path / "key.pem").write_bytes(KEY.public)
    assert TokenVerifier.from_file(tmp_path / "key.pem").verify(mint(KEY.private, "a", ["admin"]))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."),
        st.builds(
            lambda a, b, c: f"{a}.{b}.{c}",
            st.text("eyJ0123456789abcdefABCDEF-_"),
            st.text("eyJ0123456789abcdefABCDEF-_"),
            st.text("eyJ0123456789abcdefABCDEF-_="),
        ),
        st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )
)
def test_garbage_raises_only_invalid_token(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        VERIFIER.verify(garbage)
    with pytest.raises(InvalidToken):
        STATIC.lookup(garbage)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    JSON
    | st.fixed_dictionaries(
        {},
        optional={
            "sub": JSON,
            "roles": JSON | st.lists(st.sampled_from(["reader", "admin", "root", ""])),
            "iat": JSON,
            "exp": JSON | st.integers(int(time.time()), int(time.time()) + 10**6),
            "iss": JSON | st.just(ISSUER),
            "aud": JSON | st.just(AUDIENCE),
        },
    )
)
def test_correctly_signed_odd_claims_verify_or_raise_invalid_token(body: Any) -> None:
    try:
        principal = VERIFIER.verify(signed_raw(body))
    except InvalidToken:
        return
    # Accepted: then it really is a well-formed streamlearn token.
    assert principal.name == body["sub"] and principal.roles == set(body["roles"])
    assert body["iss"] == ISSUER and body["aud"] == AUDIENCE


# --- static tokens ----------------------------------------------------------------------------

TOKEN = new_static_token()
STATIC = StaticTokens.parse(
    json.dumps({token_digest(TOKEN): {"principal": "ci", "roles": ["promoter"]}})
)


def test_a_static_token_is_looked_up_by_its_digest(tmp_path: Path) -> None:
    other = new_static_token()
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                token_digest(TOKEN): {"principal": "ci", "roles": ["promoter"]},
                token_digest(other): {"principal": "dash", "roles": ["reader", "producer"]},
            }
        )
    )
    tokens = StaticTokens.from_file(path)
    assert len(tokens) == 2
    assert tokens.lookup(TOKEN) == Principal("ci", frozenset({"promoter"}))
    assert tokens.lookup(other) == Principal("dash", frozenset({"reader", "producer"}))
    assert TOKEN not in path.read_text()  # the file holds digests only
    with pytest.raises(InvalidToken, match="not a known token"):
        tokens.lookup(new_static_token())
    with pytest.raises(InvalidToken, match="not a known token"):
        tokens.lookup(token_digest(TOKEN))  # the digest itself is no token


GOOD_DIGEST = "a" * 64


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not JSON"),
        ("[]", "JSON object"),
        ('"x"', "JSON object"),
        (json.dumps({"abc": {"principal": "p", "roles": ["reader"]}}), "sha256"),
        (json.dumps({"A" * 64: {"principal": "p", "roles": ["reader"]}}), "sha256"),
        (json.dumps({GOOD_DIGEST: ["reader"]}), "must be an object"),
        (json.dumps({GOOD_DIGEST: {"roles": ["reader"]}}), "'principal'"),
        (json.dumps({GOOD_DIGEST: {"principal": "", "roles": ["reader"]}}), "'principal'"),
        (json.dumps({GOOD_DIGEST: {"principal": "p"}}), "'roles'"),
        (json.dumps({GOOD_DIGEST: {"principal": "p", "roles": []}}), "'roles'"),
        (json.dumps({GOOD_DIGEST: {"principal": "p", "roles": "reader"}}), "'roles'"),
        (json.dumps({GOOD_DIGEST: {"principal": "p", "roles": ["root"]}}), "unknown roles"),
    ],
)
def test_a_malformed_static_tokens_file_is_a_clear_config_error(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as raised:
        StaticTokens.from_file(path)
    assert str(path) in str(raised.value)


def test_an_unreadable_static_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        StaticTokens.from_file(tmp_path / "missing.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        StaticTokens.from_file(tmp_path / "binary.json")


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_document_parses_or_raises_config_error(document: Any) -> None:
    with contextlib.suppress(ConfigError):
        StaticTokens.parse(json.dumps(document))
