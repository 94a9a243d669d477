"""Roles and the policy mapping every gRPC method to the roles that may call it.

Default deny: a method without an entry is refused to everybody, `admin` included, so a new
RPC stays closed until someone decides who may call it (a unit test names any omission).
Health checks and reflection are open: probes and tooling carry no credentials. Health's
`Watch` stream is not (each open stream holds a server thread: anonymous watchers could
starve the authenticated calls); any authenticated principal may watch.

The service roles (`trainer`, `inference`, `ingestion`) hold exactly what their service
calls: the trainer creates its model, registers versions and downloads a distillation
teacher; inference reads versions and their artifacts (it follows changes on Kafka);
ingestion calls no gRPC method. Live metrics
(`ReportLiveMetric`, which may roll production back) come from whoever may roll back: a
promoter (e.g. a monitoring job holding a promoter token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PRODUCER = "producer"
READER = "reader"
PROMOTER = "promoter"
ADMIN = "admin"
TRAINER = "trainer"
INFERENCE = "inference"
INGESTION = "ingestion"

ROLES: frozenset[str] = frozenset(
    {PRODUCER, READER, PROMOTER, ADMIN, TRAINER, INFERENCE, INGESTION}
)
# The roles people and client programs take (each gets its credentials from a setup).
USER_ROLES = (PRODUCER, READER, PROMOTER, ADMIN)
# The services that call another one (the registry), each as the principal of its own role.
CALLING_SERVICES = (TRAINER, INFERENCE)

# Readable without credentials, whatever the roles: whole services, and single methods.
OPEN_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"

_INGESTION = "/streamlearn.v1.Ingestion/"
_REGISTRY = "/streamlearn.v1.ModelRegistry/"
_INFERENCE = "/inference.GRPCInferenceService/"


def _methods(prefix: str, *names: str) -> frozenset[str]:
    return frozenset(prefix + name for name in names)


INGEST = _methods(_INGESTION, "Ingest", "IngestStream")
# Every KServe V2 RPC of the service reads or infers; none changes what is served.
INFER = _methods(
    _INFERENCE,
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
)
REGISTRY_READ = _methods(
    _REGISTRY,
    "GetModel",
    "ListModels",
    "GetVersion",
    "ListVersions",
    "DownloadArtifact",
    "History",
    "Watch",
)
REGISTRY_PROMOTE = _methods(
    _REGISTRY, "SetAlias", "Promote", "Rollback", "SetTags", "ReportLiveMetric"
)
REGISTRY_ADMIN = _methods(_REGISTRY, "DeleteAlias", "CreateModel")
# DownloadArtifact: a distilled model's teacher (`services/trainer/distill.py`)
TRAINER_CALLS = _methods(_REGISTRY, "CreateModel", "RegisterVersion", "DownloadArtifact")
INFERENCE_CALLS = _methods(_REGISTRY, "GetVersion", "DownloadArtifact")
_WATCH_HEALTH = frozenset({HEALTH_WATCH})

_GRANTS: Mapping[str, frozenset[str]] = {
    PRODUCER: INGEST | _WATCH_HEALTH,
    READER: INFER | REGISTRY_READ | _WATCH_HEALTH,
    PROMOTER: INFER | REGISTRY_READ | REGISTRY_PROMOTE | _WATCH_HEALTH,
    TRAINER: TRAINER_CALLS | _WATCH_HEALTH,
    INFERENCE: INFERENCE_CALLS | _WATCH_HEALTH,
    INGESTION: _WATCH_HEALTH,
}

# Everything any role may call; admin may call all of it, and the methods only admin may.
EVERY_METHOD: frozenset[str] = frozenset().union(*_GRANTS.values()) | REGISTRY_ADMIN


def _policy() -> dict[str, frozenset[str]]:
    """Method -> the roles allowed to call it (admin everywhere)."""
    return {
        method: frozenset(
            {ADMIN} | {role for role, granted in _GRANTS.items() if method in granted}
        )
        for method in sorted(EVERY_METHOD)
    }


POLICY: Mapping[str, frozenset[str]] = _policy()


def is_open(method: str) -> bool:
    """Whether `method` (a full name, `/package.Service/Method`) needs no credentials."""
    return method in OPEN_METHODS or method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES


def allowed_roles(method: str) -> frozenset[str]:
    """The roles that may call `method`; empty for a method the policy does not know."""
    return POLICY.get(method, frozenset())


def permits(roles: Iterable[str], method: str) -> bool:
    """Whether a principal holding `roles` may call `method` (default deny)."""
    return is_open(method) or not allowed_roles(method).isdisjoint(roles)


def unknown_roles(roles: Iterable[str]) -> list[str]:
    """The names among `roles` that are not roles of streamlearn, sorted."""
    return sorted(set(roles) - ROLES)


def unmapped(methods: Iterable[str]) -> list[str]:
    """The methods among `methods` the policy has no entry for (refused to everybody)."""
    return sorted(m for m in methods if not is_open(m) and m not in POLICY)
