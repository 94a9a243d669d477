"""The secrets of the secured compose stack (docker-compose.secure.yml), made into one directory.

    python scripts/compose-secrets.py DIR [--kafka HOST:PORT] [--registry ...] [--inference ...]
    export STREAMLEARN_COMPOSE_SECRETS=DIR

Every secret is made by what `streamlearn up --secure` runs (`streamlearn.system.secure`):
`ensure(DIR)` writes the gRPC CA, service and role certificates, the token key and tokens,
the broker's CA, keystore and admin password under `DIR/secrets/`; `write_env_files` the
`<role>.env` of each user role (host paths: for clients on this machine). Then each container
gets its own copy of only the files it reads, owned by the user it runs as (a bind mount
keeps the host's owner and mode, and every private file is 0600), under `DIR/compose/`:

    compose/kafka/          the broker (uid 1000): keystore, its CA, the admin's password
    compose/kafka-init/     the one-shot provisioning as the admin (uid 10001): the broker's
                            secrets directory as `LocalSecrets` reads it, every principal's
                            password (`provision_kafka` sets them on the broker)
    compose/<service>/      each service (uid 10001): the gRPC CA, its certificate and key,
                            the token verifier, the probe's client certificate, Kafka's CA
    compose/<service>.env   the values no setting reads from a file: its Kafka password and
                            its own token (0600, read by the compose CLI on the host)

The compose files name files only; no value of a secret is ever in one. Re-running renews what
`ensure` renews (tokens every run) and rewrites the copies. Handing files to other users needs
root (run it with sudo), as the Docker daemon does.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from shared.errors import ConfigError, StreamlearnError
from shared.kafka.local.secure import read_private
from shared.security.kafka_acl import acl_table
from shared.security.pki import write_private
from shared.settings import TopicSettings
from streamlearn.system.secure import (
    SERVICES,
    LocalSecrets,
    ensure,
    write_env_files,
)

# Where every container finds its files (docker-compose.secure.yml mounts them there).
MOUNT = PurePosixPath("/run/secrets/streamlearn")
COMPOSE = "compose"
KAFKA = "kafka"
KAFKA_INIT = "kafka-init"
# The users the images run as (deploy/Dockerfile, deploy/docker/kafka.Dockerfile).
SERVICE_UID = 10001
KAFKA_UID = 1000
# The broker's CA, beside the gRPC CA (both are `ca.pem` where they are made).
KAFKA_CA = "kafka-ca.pem"
# What an env file may hold: a password (`[A-Za-z0-9_-]`) or a JWT (base64url and dots), so
# no compose env-file quoting rule can change a value.
_VALUE = re.compile(r"[A-Za-z0-9._-]{1,4096}")


def service_files(found: LocalSecrets, service: str) -> dict[str, Path]:
    """The files `service`'s container reads (name under MOUNT -> the file made by `ensure`)."""
    grpc = found.server_security(service)
    probe = found.client_security()  # the healthcheck's certificate (no role, health only)
    kafka = found.kafka(service, "unused:0")
    files = [grpc.ca_file, grpc.cert_file, grpc.key_file, grpc.token_public_key_file]
    files += [probe.cert_file, probe.key_file]
    named = {path.name: path for path in files if path is not None}
    if kafka.ssl_ca_location is not None:
        named[KAFKA_CA] = kafka.ssl_ca_location
    return named


def broker_files(found: LocalSecrets) -> dict[str, Path]:
    """The broker's keystore (key and chain), its CA and the admin's password."""
    broker = found.broker
    return {
        broker.keystore.name: broker.keystore,
        broker.ca_file.name: broker.ca_file,
        "kafka-admin.password": found.kafka_dir / "kafka-admin.password",
    }


def provisioning_files(found: LocalSecrets) -> dict[str, Path]:
    """What `provision_kafka(LocalSecrets(MOUNT), ...)` reads: the broker's secrets directory.

    The provisioning container is the broker's super user: it gets what the admin of
    `streamlearn up --secure` has (the broker's CA too, as `LocalSecrets.broker` checks the
    keystore against it), and every principal's password, which it sets on the broker.
    """
    names = ["ca.pem", "ca.key", found.broker.keystore.name, "kafka-admin.password"]
    for principal in acl_table(TopicSettings()):
        found.kafka(principal, "unused:0")  # its password, made when missing
        names.append(f"kafka-{principal}.password")
    return {f"{KAFKA}/{name}": found.kafka_dir / name for name in names}


def service_env(found: LocalSecrets, service: str) -> dict[str, str]:
    """The secret values of `service`'s environment: its Kafka password, its own token."""
    prefix = f"{service.upper()}_"
    kafka = found.kafka(service, "unused:0")
    token = found.server_security(service).token
    env = {}
    if kafka.sasl_password is not None:
        env[f"{prefix}KAFKA__SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
    if token is not None:
        env[f"{prefix}SECURITY__TOKEN"] = token.get_secret_value()
    return env


def make(
    state_dir: Path,
    *,
    kafka: str,
    registry: str,
    inference: str,
    owners: Mapping[str, int] | None = None,
) -> LocalSecrets:
    """Every secret of the secured stack under `state_dir` (see the module's docstring).

    Args:
        state_dir: The directory to fill (created 0700).
        kafka: The broker's address as the host's clients reach it (the role files).
        registry: The registry's address, likewise.
        inference: Inference's address, likewise.
        owners: The uid owning each container's copy (kafka, kafka-init, each service); None:
            the images' users.

    Raises:
        ConfigError: A copy cannot be handed to its owner (not root), a secret value holds
            characters an env file could alter, or a stored secret is malformed or readable
            by others.

    """
    owners = dict(owners or default_owners())
    found = ensure(state_dir)
    write_env_files(found, kafka, registry, inference)
    root = state_dir / COMPOSE
    _fresh_dir(root, os.getuid())
    _copy(root / KAFKA, broker_files(found), owners[KAFKA])
    _copy(root / KAFKA_INIT, provisioning_files(found), owners[KAFKA_INIT])
    for service in SERVICES:
        _copy(root / service, service_files(found, service), owners[service])
        _write_env(root / f"{service}.env", service_env(found, service))
    return found


def default_owners() -> dict[str, int]:
    """The users the images run as."""
    return {KAFKA: KAFKA_UID, KAFKA_INIT: SERVICE_UID} | dict.fromkeys(SERVICES, SERVICE_UID)


def _fresh_dir(path: Path, uid: int) -> None:
    """`path` empty, 0700 and owned by `uid` (a previous run's copies removed)."""
    if path.is_symlink() or path.is_file():
        raise ConfigError(f"{path} is not a directory")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)
    _chown(path, uid)


def _copy(directory: Path, files: Mapping[str, Path], uid: int) -> None:
    """Copy `files` (each refused if readable by others) into `directory`, owned by `uid`."""
    _fresh_dir(directory, uid)
    for name, source in files.items():
        target = directory / name
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700)
            _chown(target.parent, uid)
        write_private(target, read_private(source))
        _chown(target, uid)


def _write_env(path: Path, env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not _VALUE.fullmatch(value):
            raise ConfigError(f"{name}: the value has characters an env file could change")
    write_private(path, "".join(f"{k}={v}\n" for k, v in env.items()).encode())


def _chown(path: Path, uid: int) -> None:
    if uid == os.getuid():
        return
    try:
        os.chown(path, uid, uid)
    except PermissionError as exc:
        raise ConfigError(
            f"cannot hand {path} to uid {uid} (the container's user): run this as root"
        ) from exc


def main(argv: list[str]) -> int:
    """Make the secrets; the exit status."""
    parser = argparse.ArgumentParser(
        prog="scripts/compose-secrets.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("directory", type=Path, help="where to make them (created 0700)")
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="the broker, from the host")
    parser.add_argument("--registry", default="127.0.0.1:50052")
    parser.add_argument("--inference", default="127.0.0.1:8001")
    arguments = parser.parse_args(argv)
    directory = arguments.directory.absolute()
    try:
        make(
            directory,
            kafka=arguments.kafka,
            registry=arguments.registry,
            inference=arguments.inference,
        )
    except StreamlearnError as exc:
        print(f"compose-secrets: {exc}", file=sys.stderr)
        return 1
    print(f"compose-secrets: made in {directory}; role files: {directory}/secrets/<role>.env")
    print(f"export STREAMLEARN_COMPOSE_SECRETS={directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
