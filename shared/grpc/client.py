"""The base of streamlearn's gRPC clients: one channel, a timeout, domain errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from shared.grpc.channel import channel_for
from shared.grpc.status import error_from_rpc

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity


class GrpcClient:
    """Owns a channel to `address`; failed calls raise NotFound, Conflict, ... not RpcError."""

    def __init__(
        self,
        address: str,
        timeout: float,
        security: GrpcSecurity | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        """Open a (lazy) channel: plaintext, or TLS with the credentials of `security`.

        `options`: channel options replacing the default message limits (`channel_for`).

        Raises:
            ConfigError: `security` is inconsistent (see `channel_for`).

        """
        self.address = address
        self.security = security
        self._channel = channel_for(address, security, options=options)
        self._timeout = timeout

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _invoke(self, method: Any, request: Any) -> Any:
        """Call a unary method with the client's timeout, mapping failures to domain errors."""
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
