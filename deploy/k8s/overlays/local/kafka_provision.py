"""Provision the local overlay's Kafka broker as its admin: principals, ACLs, topics.

    python kafka_provision.py PASSWORDS_DIR [--timeout SECONDS]

Run by the Job `kafka-provision` in the streamlearn image (the image holds the project, not
deploy/: this file reaches the pod through a ConfigMap). As the broker's super user, from
the CLI's settings (`STREAMLEARN_KAFKA_BOOTSTRAP`, `..._SECURITY_PROTOCOL=SASL_SSL`,
`..._SASL_MECHANISM=SCRAM-SHA-512`, `..._SASL_USERNAME=admin`, `..._SASL_PASSWORD` from the
Secret `admin`, `..._SSL_CA_LOCATION`), it does what `streamlearn up --secure` does for the
local broker: each principal of `shared.security.kafka_acl.acl_table` gets the SCRAM
credential of `PASSWORDS_DIR/kafka-<name>.password` (the Secret `<name>`, key `password`,
projected there) and exactly the table's ACLs, then the standard topics are created (no
service may create one): `shared.kafka.local.principals.provision_deployment`. Idempotent: a rerun
after a password rotation sets the new credentials.

`provision` refuses a password file its group may read, and Kubernetes makes Secret files
group-readable in a pod with an fsGroup: the passwords are copied (0600, this process's
user) into a private temporary directory first, on the pod's memory-backed /tmp.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException
from pydantic import ValidationError

from shared.errors import ConfigError, StreamlearnError
from shared.kafka.local.files import SCRAM_MECHANISM
from shared.kafka.local.principals import provision_deployment
from shared.logs import configure_logging
from shared.security.kafka_acl import ADMIN, acl_table
from shared.security.pki import write_private
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.cli.settings import CliSettings


def admin_settings(settings: CliSettings) -> KafkaSettings:
    """How the admin reaches the broker, refused unless it is SCRAM over TLS as the admin.

    Raises:
        ConfigError: No bootstrap address, another protocol, mechanism or user, no password
            or no CA: the admin's password must never travel in clear.

    """
    if not settings.kafka_bootstrap:
        raise ConfigError("STREAMLEARN_KAFKA_BOOTSTRAP is not set")
    admin = settings.kafka(local_admin=False)
    wanted = ("SASL_SSL", SCRAM_MECHANISM, ADMIN)
    found = (admin.security_protocol, admin.sasl_mechanism, admin.sasl_username)
    if found != wanted:
        raise ConfigError(f"the admin connects as {wanted} (protocol, mechanism, user): {found}")
    if admin.sasl_password is None or not admin.sasl_password.get_secret_value():
        raise ConfigError("STREAMLEARN_KAFKA_SASL_PASSWORD (the admin's) is not set")
    if admin.ssl_ca_location is None:
        raise ConfigError("STREAMLEARN_KAFKA_SSL_CA_LOCATION (the broker's CA) is not set")
    return admin.model_copy(update={"client_id": "streamlearn-provision"})


def check_passwords(passwords: Path, names: Iterable[str]) -> None:
    """Every principal's password file is there (`provision` would otherwise make one).

    Raises:
        ConfigError: The directory or a principal's file is missing, naming its Secret.

    """
    if not passwords.is_dir():
        raise ConfigError(f"{passwords} is no directory of passwords")
    missing = sorted(n for n in names if not (passwords / f"kafka-{n}.password").is_file())
    if missing:
        raise ConfigError(
            f"no password for {', '.join(missing)} in {passwords}: create the Secrets "
            "(deploy/k8s/local_kafka.py secrets) and project each as kafka-<name>.password"
        )


def private_copies(source: Path, names: Iterable[str], target: Path) -> None:
    """Each principal's password file of `source` copied into `target`, 0600 (see the module).

    Raises:
        ConfigError: A file is missing (`check_passwords`) or unreadable.

    """
    chosen = list(names)
    check_passwords(source, chosen)
    for name in chosen:
        file = f"kafka-{name}.password"
        try:
            data = (source / file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {source / file}: {exc.strerror}") from None
        write_private(target / file, data)


def run(settings: CliSettings, passwords: Path, timeout: float) -> list[str]:
    """Provision the principals and create the missing topics; the topics created."""
    admin = admin_settings(settings)
    topics = TopicSettings()
    with tempfile.TemporaryDirectory(prefix="kafka-provision-") as private:
        private_copies(passwords, acl_table(topics), Path(private))
        try:
            return provision_deployment(admin, Path(private), topics, timeout)
        except KafkaException as exc:
            raise ConfigError(f"creating the topics failed: {exc.args[0].str()}") from exc


def _arguments(argv: Iterable[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kafka_provision.py",
        description="create the Kafka principals, their ACLs and the topics, as the admin",
    )
    parser.add_argument("passwords", type=Path, help="kafka-<principal>.password files")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per step")
    arguments = parser.parse_args(list(argv))
    if not arguments.timeout > 0:
        parser.error("--timeout must be positive")
    return arguments


def main(argv: Iterable[str]) -> int:
    """Provision (see the module); the exit status: 1 with the reason on stderr."""
    arguments = _arguments(argv)
    configure_logging("kafka-provision")
    try:
        settings = CliSettings()
    except ValidationError as exc:  # a malformed STREAMLEARN_* variable
        print(f"kafka-provision: {exc}", file=sys.stderr)
        return 1
    try:
        created = run(settings, arguments.passwords, arguments.timeout)
    except StreamlearnError as exc:  # every expected failure: a line, no traceback
        print(f"kafka-provision: {exc}", file=sys.stderr)
        return 1
    print(f"kafka-provision: principals and ACLs set; topics created: {created or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
