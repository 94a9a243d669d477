"""The files a local single-node KRaft broker runs from: server.properties and log4j2."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.settings import DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR


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

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

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
    return "".join(f"{key}={value}\n" for key, value in values.items())


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
