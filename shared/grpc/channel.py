"""Client channels with the same message limits as the servers, plaintext or TLS + credentials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from shared.errors import ConfigError
from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES, message_size_options, read_credential

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity


def insecure_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> grpc.Channel:
    """A plaintext channel to `address` (host:port) that accepts large messages."""
    return grpc.insecure_channel(address, options=message_size_options(max_message_bytes))


def channel_for(
    address: str,
    security: GrpcSecurity | None = None,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A channel to `address`: plaintext when `security` is None or TLS is off, else TLS.

    Args:
        address: The target (host:port, or a resolver target such as dns:///host:port).
        security: The client's TLS and credentials.
        max_message_bytes: The message limit, unless `options` are given.
        options: Channel options replacing the default message limits.

    Raises:
        ConfigError: A token without TLS (it would travel in clear), or an unreadable file.

    """
    chosen = list(options if options is not None else message_size_options(max_message_bytes))
    if security is None or not security.tls:
        if security is not None and security.token is not None:
            raise ConfigError(
                f"a bearer token is set for {address} but TLS is off: it would travel in "
                "clear (set SECURITY__TLS=true and SECURITY__CA_FILE)"
            )
        return grpc.insecure_channel(address, options=chosen)
    return secure_channel(address, security, options=chosen)


def secure_channel(
    address: str, security: GrpcSecurity, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A TLS channel trusting `security.ca_file`, with its client certificate and token."""
    chosen = list(options)
    if security.server_name:
        chosen.append(("grpc.ssl_target_name_override", security.server_name))
    return grpc.secure_channel(address, channel_credentials(security), options=chosen)


def channel_credentials(security: GrpcSecurity) -> grpc.ChannelCredentials:
    """TLS credentials (CA, optional client certificate) composed with the bearer token.

    Raises:
        ConfigError: Only one of cert_file and key_file, or a file that cannot be read.

    """
    if (security.cert_file is None) != (security.key_file is None):
        raise ConfigError("a client certificate needs both cert_file and key_file")
    ca = read_credential(security.ca_file, "CA certificate") if security.ca_file else None
    key = read_credential(security.key_file, "TLS private key") if security.key_file else None
    cert = read_credential(security.cert_file, "TLS certificate") if security.cert_file else None
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    if security.token is None:
        return credentials
    token = grpc.access_token_call_credentials(security.token.get_secret_value())
    return grpc.composite_channel_credentials(credentials, token)
