"""Create the principals of `shared.security.kafka_acl` on a secure broker, as its admin.

Idempotent: every run sets each principal's SCRAM credential to the password stored in its
file (made once, 0600) and makes the principal's ACLs exactly those of the table (missing
ones created, ones no longer in the table deleted), so a narrowed table takes effect.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

# The documented import path; the package's stubs declare these on cimpl only.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from shared.errors import BrokerError, Unavailable
from shared.kafka.admin import ensure_topics, standard_topics, wait_for_broker
from shared.kafka.local.files import SCRAM_MECHANISM
from shared.kafka.local.secure import password_file
from shared.security.kafka_acl import ADMIN, Grant, acl_table
from shared.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)
SCRAM_ITERATIONS = 8192  # Kafka accepts 4096 to 16384
# Also a file name (`kafka-<name>.password`): no path separators, dots or spaces.
_NAME = re.compile("[a-z][a-z0-9-]{0,63}")


def provision(
    admin: KafkaSettings,
    secrets_dir: Path,
    table: Mapping[str, frozenset[Grant]],
    timeout: float = 30.0,
) -> dict[str, KafkaSettings]:
    """Create or update each principal of `table` and its ACLs; return how each connects.

    Args:
        admin: The super user's settings (`BrokerSecurity.admin_settings`).
        secrets_dir: Where each principal's password lives (`kafka-<name>.password`).
        table: The principals and their grants (`kafka_acl.acl_table`).
        timeout: Seconds to wait for the broker and for each request.

    Returns:
        Each principal's settings: SASL_SSL, SCRAM-SHA-512, its name and password, the CA.

    Raises:
        BrokerError: A principal is named like the admin, or the broker refused a change.
        Unavailable: The broker did not answer within `timeout`.

    """
    if ADMIN in table or admin.sasl_username in table:
        raise BrokerError("the admin is the super user: it takes no ACLs")
    for name in table:
        if not _NAME.fullmatch(name):
            raise BrokerError(f"principal name {name!r}: use 1-64 of a-z 0-9 - (a letter first)")
    client = AdminClient(admin.client_config())
    wait_for_broker(client, timeout)
    passwords = {name: password_file(secrets_dir / f"kafka-{name}.password") for name in table}
    _set_credentials(client, {n: p.get_secret_value() for n, p in passwords.items()}, timeout)
    for name, grants in table.items():
        _reconcile_acls(client, name, grants, timeout)
    log.info("kafka principals provisioned", extra={"principals": sorted(table)})
    return {
        name: admin.model_copy(
            update={
                "client_id": f"streamlearn-{name}",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": SCRAM_MECHANISM,
                "sasl_username": name,
                "sasl_password": password,
            }
        )
        for name, password in passwords.items()
    }


def provision_deployment(
    admin: KafkaSettings, secrets_dir: Path, topics: TopicSettings, timeout: float = 30.0
) -> list[str]:
    """A secured deployment's principals and ACLs (`provision`), then its standard topics.

    Every secured setup runs this as the admin (`up --secure`, compose's `kafka-init`, the
    local Kubernetes overlay's Job): no other principal may create a topic.

    Returns:
        The topics created now.

    Raises:
        BrokerError: As `provision`.
        Unavailable: As `provision`.
        KafkaException: A topic could not be created.

    """
    provision(admin, secrets_dir, acl_table(topics), timeout)
    return ensure_topics(AdminClient(admin.client_config()), standard_topics(topics), timeout)


def binding(principal: str, grant: Grant) -> AclBinding:
    """The confluent-kafka ALLOW binding of `grant` for `principal`, from any host."""
    pattern = ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL
    return AclBinding(
        ResourceType[grant.resource.value],
        grant.name,
        pattern,
        f"User:{principal}",
        "*",
        AclOperation[grant.operation.value],
        AclPermissionType.ALLOW,
    )


def _set_credentials(client: AdminClient, passwords: dict[str, str], timeout: float) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, password.encode())
        for name, password in passwords.items()
    ]
    futures = client.alter_user_scram_credentials(upserts, request_timeout=timeout)
    for name, future in futures.items():
        _result(future, f"setting the SCRAM credential of {name!r}", timeout)


def _reconcile_acls(
    client: AdminClient, principal: str, grants: frozenset[Grant], timeout: float
) -> None:
    wanted = {_key(binding(principal, g)): binding(principal, g) for g in grants}
    # None matches any name and any host (the stubs only know str).
    every = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        f"User:{principal}",
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    future = client.describe_acls(every, request_timeout=timeout)
    existing = {_key(b): b for b in _result(future, f"listing {principal}'s ACLs", timeout)}
    missing = [b for key, b in wanted.items() if key not in existing]
    stale = [_exact(b) for key, b in existing.items() if key not in wanted]
    if missing:
        for future in client.create_acls(missing, request_timeout=timeout).values():
            _result(future, f"creating {principal}'s ACLs", timeout)
    if stale:
        for future in client.delete_acls(stale, request_timeout=timeout).values():
            _result(future, f"deleting {principal}'s stale ACLs", timeout)


def _key(b: AclBinding) -> tuple[Any, ...]:
    """A binding's fields in AclBinding's (and AclBindingFilter's) argument order."""
    return (
        b.restype,
        b.name,
        b.resource_pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )


def _exact(b: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(*_key(b))


def _result(future: Future[Any], what: str, timeout: float) -> Any:
    try:
        return future.result(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"{what} failed: {exc.args[0].str()}") from exc
    except TimeoutError as exc:
        raise Unavailable(f"{what}: no answer within {timeout:.0f}s") from exc
