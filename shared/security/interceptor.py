"""The server side of auth: who is calling (Authenticator) and may they (AuthInterceptor).

The check runs inside the method handler, with the call's real ServicerContext: its
auth_context() holds the peer certificate gRPC verified, its invocation_metadata() the
`authorization: Bearer ...` header. A bearer token, when sent, decides; otherwise a verified
client certificate does. The principal is bound for the duration of the call, so servicers
read it with `shared.security.identity.current_principal()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from shared.errors import ConfigError
from shared.security.identity import (
    PermissionDenied,
    Principal,
    Unauthenticated,
    bind_principal,
    principal_from_certificate,
    unbind_principal,
)
from shared.security.roles import is_open, permits
from shared.security.tokens import StaticTokens, TokenVerifier, looks_signed
from shared.settings import GrpcSecurity

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
_BEARER = "bearer "
_PEER_CERT = "x509_pem_cert"


class Authenticator:
    """Turns a call's credentials into a Principal (signed tokens, static tokens, certs)."""

    def __init__(
        self,
        verifier: TokenVerifier | None = None,
        static: StaticTokens | None = None,
        certificates: bool = True,
    ) -> None:
        self._verifier = verifier
        self._static = static
        self._certificates = certificates

    @classmethod
    def from_security(cls, security: GrpcSecurity) -> Authenticator:
        """The authenticator a server with `security` uses; files are read now.

        Raises:
            ConfigError: An unreadable or malformed key or static tokens file, or no way to
                authenticate anybody (no token source and no CA for client certificates).

        """
        verifier = (
            TokenVerifier.from_file(security.token_public_key_file)
            if security.token_public_key_file
            else None
        )
        static = (
            StaticTokens.from_file(security.static_tokens_file)
            if security.static_tokens_file
            else None
        )
        certificates = security.ca_file is not None
        if verifier is None and static is None and not certificates:
            raise ConfigError(
                "auth is on but nothing can authenticate a caller: set "
                "token_public_key_file, static_tokens_file or ca_file (client certificates)"
            )
        return cls(verifier, static, certificates)

    @property
    def takes_tokens(self) -> bool:
        """Whether bearer tokens can authenticate anybody here."""
        return self._verifier is not None or self._static is not None

    def authenticate(
        self, metadata: Sequence[tuple[str, Any]], auth_context: dict[str, list[bytes]]
    ) -> Principal:
        """The caller of one RPC.

        Raises:
            Unauthenticated: No credentials, or credentials that do not verify.

        """
        token = bearer_token(metadata)
        if token is not None:
            return self._from_token(token)
        certificates = auth_context.get(_PEER_CERT) or []
        if certificates and self._certificates:
            return principal_from_certificate(certificates[0])
        raise Unauthenticated(
            "no credentials: send `authorization: Bearer <token>` or a client certificate"
        )

    def _from_token(self, token: str) -> Principal:
        if self._verifier is not None and looks_signed(token):
            return self._verifier.verify(token)
        if self._static is not None:
            return self._static.lookup(token)
        if self._verifier is not None:
            return self._verifier.verify(token)  # not JWT-shaped: says it is malformed
        raise Unauthenticated("this server takes no bearer tokens: use a client certificate")


def bearer_token(metadata: Sequence[tuple[str, Any]]) -> str | None:
    """The token of the call's `authorization: Bearer` header; None without that header.

    Raises:
        Unauthenticated: Several authorization headers, or one that is not a Bearer token.

    """
    values = [value for key, value in metadata if key.lower() == AUTHORIZATION]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    if not isinstance(value, str) or not value[: len(_BEARER)].lower() == _BEARER:
        raise Unauthenticated("the authorization header is not `Bearer <token>`")
    return value[len(_BEARER) :].strip()


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Checks every call but health and reflection against the policy.

    No or invalid credentials end the call with UNAUTHENTICATED, a role that does not allow
    the method with PERMISSION_DENIED; a method the policy does not know is refused to all.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """The method's handler, wrapped so the check runs first within the call."""
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or is_open(method):
            return handler
        return _guarded(handler, lambda context: self.authorize(method, context))

    def authorize(self, method: str, context: grpc.ServicerContext) -> Principal:
        """The caller of `method` when allowed; otherwise the call ends with its status."""
        try:
            principal = self._authenticator.authenticate(
                context.invocation_metadata() or (), context.auth_context() or {}
            )
        except Unauthenticated as exc:
            log.warning(
                "rpc refused: unauthenticated",
                extra={"method": method, "peer": context.peer(), "reason": str(exc)},
            )
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise AssertionError("context.abort returned") from None
        if not permits(principal.roles, method):
            denied = PermissionDenied(
                f"{principal.name!r} (roles: {', '.join(sorted(principal.roles))}) "
                f"may not call {method}"
            )
            log.warning(
                "rpc refused: permission denied",
                extra={"method": method, "principal": principal.name, "peer": context.peer()},
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(denied))
        return principal


def _guarded(
    handler: grpc.RpcMethodHandler,
    authorize: Callable[[grpc.ServicerContext], Principal],
) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour preceded by `authorize` and run as the principal."""

    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            token = bind_principal(authorize(context))
            try:
                return behavior(request, context)
            finally:
                unbind_principal(token)

        return checked

    def stream_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        # A generator: the principal stays bound while the response stream is produced.
        def checked(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token = bind_principal(authorize(context))
            try:
                yield from behavior(request, context)
            finally:
                unbind_principal(token)

        return checked

    arguments = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **arguments)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_response(handler.unary_stream), **arguments
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary), **arguments
        )
    return grpc.stream_stream_rpc_method_handler(
        stream_response(handler.stream_stream), **arguments
    )
