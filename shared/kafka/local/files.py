"""The files a local single-node KRaft broker runs from: server.properties and log4j2."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from shared.settings import DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR, KafkaSettings

SCRAM_MECHANISM = "SCRAM-SHA-512"
# Names and passwords go into a JAAS line, a properties file and StorageTool's
# `--add-scram` syntax: these characters need no quoting in any of them.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SECRET = "^[A-Za-z0-9_-]{16,256}$"
# Part of a regular expression in the controller's principal mapping: no dots.
_CN = "^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"


class BrokerSecurity(BaseModel):
    """The secure mode: SASL/SCRAM-SHA-512 over TLS for clients, mutual TLS for the controller.

    Made by `shared.kafka.local.secure.broker_security` from a secrets directory.
    """

    model_config = ConfigDict(frozen=True)

    # The broker's PKCS#8 key followed by its certificate chain (PEM, 0600). Not encrypted:
    # Kafka's PEM key store on Java 17 cannot decrypt PBES2 keys ("PBES2 SecretKeyFactory
    # not available"), PBES1 means 3DES, and the password would sit in a 0600 file beside
    # the key anyway; so server.properties holds no key password at all.
    keystore: Path
    # The CA that issued the broker's certificate (PEM): clients trust it too.
    ca_file: Path
    # The super user: the broker's own inter-broker principal and the operator's admin.
    admin_user: str = Field(default="admin", pattern=_NAME)
    admin_password: SecretStr
    # The common name of the broker's certificate: the one certificate that is the admin on
    # the controller listener.
    broker_name: str = Field(default="streamlearn-kafka-broker", pattern=_CN)

    @field_validator("admin_password")
    @classmethod
    def _plain_characters(cls, value: SecretStr) -> SecretStr:
        if not re.fullmatch(_SECRET, value.get_secret_value()):
            raise ValueError("must be 16 to 256 characters of A-Z a-z 0-9 _ -")
        return value

    def admin_settings(self, bootstrap: str, client_id: str = "streamlearn-admin") -> KafkaSettings:
        """How the admin connects to this broker."""
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=self.admin_user,
            sasl_password=self.admin_password,
            ssl_ca_location=self.ca_file,
        )

    def scram_argument(self) -> str:
        """StorageTool's `--add-scram` value: the admin's credential, stored at format time."""
        password = self.admin_password.get_secret_value()
        return f"{SCRAM_MECHANISM}=[name={self.admin_user},password={password}]"


class BrokerConfig(BaseModel):
    """Where and how the project's own broker runs."""

    model_config = ConfigDict(frozen=True)

    state_dir: Path = DEFAULT_STATE_DIR / "kafka"
    cache_dir: Path = DEFAULT_CACHE_DIR
    host: str = "127.0.0.1"
    port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    heap: str = "512m"
    java: str = "java"
    mvn: str = "mvn"
    # Extra Maven arguments, e.g. ("-s", "corporate-settings.xml") behind a mirror.
    mvn_args: tuple[str, ...] = ()
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 60.0
    # None: today's plain-text broker (the demo); set: SASL_SSL with ACLs (see BrokerSecurity).
    security: BrokerSecurity | None = None

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    def client_settings(self) -> KafkaSettings:
        """How the operator (the admin in secure mode) connects to this broker."""
        if self.security is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap)
        return self.security.admin_settings(self.bootstrap)

    @property
    def data_dir(self) -> Path:
        """Kafka's log.dirs."""
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        """The broker's own log files."""
        return self.state_dir / "logs"


def server_properties(config: BrokerConfig) -> str:
    """A combined broker+controller node on loopback, sized for a small machine."""
    host, port, cport = config.host, config.port, config.controller_port
    values = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(config.data_dir),
        # One node: internal topics cannot have more replicas than brokers.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's buffer is allocated on the heap at start (128 MiB by default).
        "log.cleaner.dedupe.buffer.size": str(2 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
    }
    if config.security is not None:
        values |= _secure_properties(config, config.security)
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _secure_properties(config: BrokerConfig, security: BrokerSecurity) -> dict[str, str]:
    """SASL_SSL for clients and the broker itself; mutual TLS on the controller listener.

    The controller listener is not left plain: any local process could otherwise connect to
    it and, with no authentication there, be the ANONYMOUS principal talking to the quorum.
    SCRAM is not used on it either: the controller authenticates SCRAM from the metadata it
    serves itself, which Kafka does not support for the controller listener (KAFKA-15513).
    It takes the broker's own certificate instead (client auth required, same CA), and only
    that certificate's exact subject maps to the admin; any other certificate of the CA
    keeps its full distinguished name as principal, which has no rights at all.
    """
    host, port, cport = config.host, config.port, config.controller_port
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    admin = security.admin_user
    jaas = (
        f'{scram} required username="{admin}" '
        f'password="{security.admin_password.get_secret_value()}";'
    )
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{cport}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.controller.ssl.principal.mapping.rules": (
            f"RULE:^CN={security.broker_name}$/{admin}/,DEFAULT"
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{admin}",
    }


def log4j2_properties(logs_dir: Path) -> str:
    """Broker logs to a rolling file (the properties format needs no YAML parser on the path)."""
    return f"""status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs_dir}/server.log
appender.file.filePattern = {logs_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""
