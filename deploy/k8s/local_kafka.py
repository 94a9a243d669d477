"""The local overlay's Kafka broker, secured as `streamlearn up --secure` secures its own.

    .venv/bin/python deploy/k8s/local_kafka.py config deploy/k8s/overlays/local/kafka
    .venv/bin/python deploy/k8s/local_kafka.py secrets DIR [--namespace NS]

`config` writes the broker's ConfigMap files: `server.properties` made by the local broker's
own code (`shared.kafka.local.files.server_properties`: SASL/SCRAM-SHA-512 over TLS for
clients, mutual TLS on the controller listener, StandardAuthorizer without access where no
ACL allows it, the super user `admin`) with the pod's mount paths and, in place of the
admin's password, `PASSWORD_PLACEHOLDER`, which the broker's init container replaces with the
password from its Secret; `add-scram`, the admin's credential set at format time, likewise;
`log4j2.properties` (the console). A unit test renders the overlay and compares, so the
ConfigMap cannot drift from the code.

`secrets` writes into DIR (new or empty, 0700; files 0600) one folder per Secret and prints
the `kubectl create secret` commands, never a value: `kafka-broker-tls/` (`keystore.pem`:
the broker's key and certificate chain, `ca.crt`), `streamlearn-cluster-ca-cert/`
(`ca.crt`, what clients trust: named as Strimzi names its CA's Secret, so the services'
manifests are the same in both overlays), and per principal a folder of its name with
`password`: `admin` (the super user) and every principal of
`shared.security.kafka_acl.acl_table` (as Strimzi's User Operator makes a Secret per
KafkaUser). `kafka-ca/ca.key` stays offline. Rotation: see the local kustomization.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

from shared.kafka.local.files import BrokerConfig, BrokerSecurity, server_properties
from shared.kafka.local.secure import password_file
from shared.security import pki
from shared.security.kafka_acl import ADMIN, acl_table
from shared.security.secret_files import kubectl_commands, new_directory
from shared.settings import TopicSettings

NAMESPACE = "streamlearn-local"  # the local overlay's
# The broker's StatefulSet, its headless Service and its one pod.
SERVICE, HEADLESS, POD = "kafka", "kafka-headless", "kafka-0"
CLIENT_PORT, CONTROLLER_PORT = 9092, 9093
# Where the broker pod mounts each thing (deploy/k8s/overlays/local/kafka.yaml).
STATE_DIR = Path("/var/lib/kafka")  # the data volume: log.dirs is its data/ subdirectory
TLS_DIR = Path("/etc/kafka/tls")  # Secret kafka-broker-tls
KEYSTORE, CA_FILE = "keystore.pem", "ca.crt"
# Replaced by the init container with the admin's password (its Secret): the ConfigMap never
# holds it. Plain characters: it must pass BrokerSecurity's password check itself.
PASSWORD_PLACEHOLDER = "ADMIN_PASSWORD_PLACEHOLDER"
BROKER_SECRET = "kafka-broker-tls"
CA_SECRET = "streamlearn-cluster-ca-cert"
BROKER_NAME = "streamlearn-kafka-broker"  # the certificate the controller maps to the admin
LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def advertised_host(namespace: str = NAMESPACE) -> str:
    """The broker pod's own name: it binds its listeners there and advertises it.

    The pod's DNS record under the headless Service (published before the pod is ready, so
    the broker can bind at start), in the `svc` domain so that clients of any namespace
    resolve it whatever the cluster's domain.
    """
    return f"{POD}.{HEADLESS}.{namespace}.svc"


def broker_hosts(namespace: str = NAMESPACE) -> list[str]:
    """Every name clients reach the broker by: the Service (bootstrap) and the pod."""
    service = f"{SERVICE}.{namespace}"
    pod = advertised_host(namespace)
    return [
        SERVICE,
        service,
        f"{service}.svc",
        f"{service}.svc.cluster.local",
        pod,
        f"{pod}.cluster.local",
    ]


def broker_config(namespace: str = NAMESPACE) -> BrokerConfig:
    """The broker as the pod runs it, the admin's password a placeholder (see the module)."""
    security = BrokerSecurity(
        keystore=TLS_DIR / KEYSTORE,
        ca_file=TLS_DIR / CA_FILE,
        admin_user=ADMIN,
        admin_password=SecretStr(PASSWORD_PLACEHOLDER),
        broker_name=BROKER_NAME,
    )
    return BrokerConfig(
        state_dir=STATE_DIR,
        host=advertised_host(namespace),
        port=CLIENT_PORT,
        controller_port=CONTROLLER_PORT,
        security=security,
    )


def config_files(namespace: str = NAMESPACE) -> dict[str, str]:
    """The broker ConfigMap's files, name -> content."""
    config = broker_config(namespace)
    assert config.security is not None  # made secure just above
    return {
        "server.properties": server_properties(config),
        "add-scram": config.security.scram_argument() + "\n",
        "log4j2.properties": LOG4J2,
    }


def principals() -> list[str]:
    """The SCRAM principals of the broker: the admin, then those of the ACL table."""
    return [ADMIN, *sorted(acl_table(TopicSettings()))]


def write_secrets(out: Path, namespace: str) -> list[Path]:
    """The broker's CA, keystore and every principal's password; the Secrets' folders."""
    ca = pki.new_ca("streamlearn local Kafka CA")
    pki.write_private(out / "kafka-ca" / "ca.crt", ca.cert)
    pki.write_private(out / "kafka-ca" / "ca.key", ca.key)
    # Client too: the same certificate proves the broker on its controller listener.
    pair = pki.issue(ca, BROKER_NAME, hosts=broker_hosts(namespace), server=True, client=True)
    broker = out / BROKER_SECRET
    # The key first, then the chain: Kafka's PEM key store reads both from one file.
    pki.write_private(broker / KEYSTORE, pair.key + pair.cert + ca.cert)
    pki.write_private(broker / CA_FILE, ca.cert)
    pki.write_private(out / CA_SECRET / CA_FILE, ca.cert)
    folders = [broker, out / CA_SECRET]
    for name in principals():
        password_file(out / name / "password")  # the local broker's generator and check
        folders.append(out / name)
    return folders


def write_config(folder: Path, namespace: str) -> None:
    """The ConfigMap files into `folder` (the overlay's `kafka/`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in config_files(namespace).items():
        (folder / name).write_text(text)


def _arguments(argv: Iterable[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy/k8s/local_kafka.py",
        description="the local overlay's secured Kafka broker: its ConfigMap files, its secrets",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write the broker's ConfigMap files")
    config.add_argument("folder", type=Path, help="deploy/k8s/overlays/local/kafka")
    secrets = commands.add_parser("secrets", help="make the Kafka Secrets (no value printed)")
    secrets.add_argument("out", type=new_directory, help="a new or empty directory")
    for command in (config, secrets):
        command.add_argument("--namespace", default=NAMESPACE, help="the overlay's namespace")
    return parser.parse_args(list(argv))


def main(argv: Iterable[str]) -> int:
    """Run a command (see the module); the exit status."""
    arguments = _arguments(argv)
    if arguments.command == "config":
        write_config(arguments.folder, arguments.namespace)
        return 0
    out: Path = arguments.out
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    folders = write_secrets(out, arguments.namespace)
    print(f"# Kafka credentials in {out} (0600); load them with:")
    for command in kubectl_commands(folders, arguments.namespace):
        print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
