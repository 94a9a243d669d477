"""The base of streamlearn's gRPC clients: one channel, a timeout, domain errors."""

from __future__ import annotations

from typing import Any

import grpc

from shared.grpc.channel import insecure_channel
from shared.grpc.status import error_from_rpc


class GrpcClient:
    """Owns a channel to `address`; failed calls raise NotFound, Conflict, ... not RpcError."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self._channel = insecure_channel(address)
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
