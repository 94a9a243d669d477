"""Domain errors to gRPC status codes: the only place that mapping lives."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from shared import errors

_CODES: list[tuple[type[errors.StreamlearnError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.IntegrityError, grpc.StatusCode.DATA_LOSS),
    (errors.InferenceFailed, grpc.StatusCode.INTERNAL),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


def status_code_for(error: errors.StreamlearnError) -> grpc.StatusCode:
    """The status code a client sees for a domain error; INTERNAL for anything unmapped."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError) -> errors.StreamlearnError:
    """The domain error a client raises for a failed call (the inverse of `status_code_for`).

    INTERNAL comes back as `InferenceFailed` (the one domain error sent as INTERNAL).
    """
    code, detail = exc.code(), exc.details()
    for kind, mapped in _CODES:
        if mapped == code and kind is not errors.ConfigError:
            return kind(detail)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return errors.Unavailable(f"{code.name}: {detail}")
    return errors.StreamlearnError(f"{code.name}: {detail}")


def abort_with(context: grpc.ServicerContext, error: errors.StreamlearnError) -> NoReturn:
    """End the RPC with the status that matches `error` and its message."""
    context.abort(status_code_for(error), str(error))
    raise AssertionError("context.abort returned")  # grpc raises; this keeps type checkers honest


def domain_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a unary servicer method: a StreamlearnError becomes the matching status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except errors.StreamlearnError as exc:
            abort_with(context, exc)

    return wrapper


def streaming_domain_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """The same for a server-streaming method (a generator)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from method(self, request, context)
        except errors.StreamlearnError as exc:
            abort_with(context, exc)

    return wrapper
