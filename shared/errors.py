"""The one error hierarchy of streamlearn.

Domain code raises these; only gRPC servicers translate them into status codes
(see `shared.grpc.status`), and only CLIs turn them into exit codes.
"""

from __future__ import annotations


class StreamlearnError(Exception):
    """Root of every error streamlearn raises on purpose."""


class ConfigError(StreamlearnError):
    """Settings or a user-supplied configuration are invalid."""


class InvalidArgument(StreamlearnError):
    """A request or an input record is malformed."""


class NotFound(StreamlearnError):
    """A named thing (model, version, alias, topic, stream) does not exist."""


class AlreadyExists(StreamlearnError):
    """Creating something that exists already."""


class Conflict(StreamlearnError):
    """A compare-and-set or another precondition failed; the caller may re-read and retry."""


class ResourceExhausted(StreamlearnError):
    """A request is larger than a configured limit."""


class Unavailable(StreamlearnError):
    """A dependency (broker, registry, model) cannot be reached or is not ready yet."""


class BrokerError(StreamlearnError):
    """The local Kafka broker cannot be set up, started or stopped."""


class IntegrityError(StreamlearnError):
    """Stored or received bytes do not match their recorded digest or size."""


class InferenceFailed(StreamlearnError):
    """The runtime failed on a request that passed every check (a client sees INTERNAL)."""


class Unauthenticated(StreamlearnError):
    """The caller presented no credentials, or credentials that do not verify."""


class PermissionDenied(StreamlearnError):
    """The caller is known, but none of its roles allows what it asked for."""
