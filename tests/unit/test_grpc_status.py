from __future__ import annotations

import grpc
import pytest

from shared import errors
from shared.grpc.status import error_from_rpc, status_code_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NotFound("m"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Conflict("cas"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (errors.AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.IntegrityError("sha"), grpc.StatusCode.DATA_LOSS),
        (errors.BrokerError("?"), grpc.StatusCode.INTERNAL),
        (errors.InferenceFailed("runtime"), grpc.StatusCode.INTERNAL),
    ],
)
def test_domain_errors_map_to_status_codes(
    error: errors.StreamlearnError, code: grpc.StatusCode
) -> None:
    assert status_code_for(error) == code


def test_every_error_derives_from_the_root() -> None:
    kinds = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(kind, errors.StreamlearnError) for kind in kinds)


class _Rpc(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_a_runtime_failure_round_trips_through_its_status() -> None:
    sent = errors.InferenceFailed("m v1: runtime error: index 7 out of bounds")
    back = error_from_rpc(_Rpc(status_code_for(sent), str(sent)))
    assert type(back) is errors.InferenceFailed
    assert str(back) == str(sent)
