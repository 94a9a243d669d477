"""Client channels with the same message limits as the servers."""

from __future__ import annotations

import grpc

from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES, message_size_options


def insecure_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> grpc.Channel:
    """A plaintext channel to `address` (host:port) that accepts large messages."""
    return grpc.insecure_channel(address, options=message_size_options(max_message_bytes))
