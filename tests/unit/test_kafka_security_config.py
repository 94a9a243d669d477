"""The secure broker's properties, its secrets files, the ACL table and faust's credentials."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import SecretStr, ValidationError

from services.ingestion.settings import IngestionSettings
from services.ingestion.worker import _credentials
from services.trainer.settings import TrainerSettings
from shared.errors import BrokerError, ConfigError
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig, BrokerSecurity, server_properties
from shared.kafka.local.secure import ADMIN_PASSWORD, BROKER_KEYSTORE, broker_security
from shared.security.kafka_acl import (
    AccessNames,
    Grant,
    Operation,
    Resource,
    acl_table,
    allowed,
)
from shared.security.pki import new_ca
from shared.settings import KafkaSettings, TopicSettings

TOPICS = TopicSettings()
READ, WRITE, DESCRIBE = Operation.READ, Operation.WRITE, Operation.DESCRIBE
TOPIC, GROUP, TXN = Resource.TOPIC, Resource.GROUP, Resource.TRANSACTIONAL_ID

# What the plain broker's properties were before the secure mode existed, byte for byte.
PLAIN = (
    "process.roles=broker,controller\nnode.id=1\n"
    "controller.quorum.bootstrap.servers=127.0.0.1:1235\n"
    "listeners=PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235\n"
    "advertised.listeners=PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235\n"
    "inter.broker.listener.name=PLAINTEXT\ncontroller.listener.names=CONTROLLER\n"
    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
    "log.dirs=/s/data\noffsets.topic.replication.factor=1\n"
    "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
    "share.coordinator.state.topic.replication.factor=1\n"
    "share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
    "log.cleaner.dedupe.buffer.size=2097152\nnum.network.threads=2\nnum.io.threads=2\n"
    "num.partitions=1\nauto.create.topics.enable=false\n"
)


def _security(tmp_path: Path) -> BrokerSecurity:
    return BrokerSecurity(
        keystore=tmp_path / "kafka-broker.pem",
        ca_file=tmp_path / "ca.pem",
        admin_password=SecretStr("A" * 43),
    )


def _properties(security: BrokerSecurity | None) -> dict[str, str]:
    config = BrokerConfig(state_dir=Path("/s"), port=1234, controller_port=1235, security=security)
    return dict(line.split("=", 1) for line in server_properties(config).splitlines())


def test_the_plain_broker_is_unchanged() -> None:
    config = BrokerConfig(state_dir=Path("/s"), port=1234, controller_port=1235)
    assert server_properties(config) == PLAIN


def test_the_secure_broker_has_no_plain_text_listener(tmp_path: Path) -> None:
    props = _properties(_security(tmp_path))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["advertised.listeners"] == props["listeners"]
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert "PLAINTEXT" not in " ".join(props.values())
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"


def test_the_secure_broker_authorizes_every_request(tmp_path: Path) -> None:
    props = _properties(_security(tmp_path))
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"


def test_the_controller_takes_only_the_brokers_certificate(tmp_path: Path) -> None:
    props = _properties(_security(tmp_path))
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    rules = props["listener.name.controller.ssl.principal.mapping.rules"]
    assert rules == "RULE:^CN=streamlearn-kafka-broker$/admin/,DEFAULT"


def test_tls_comes_from_pem_files_and_the_broker_logs_in_as_the_admin(tmp_path: Path) -> None:
    props = _properties(_security(tmp_path))
    assert (props["ssl.keystore.type"], props["ssl.truststore.type"]) == ("PEM", "PEM")
    assert props["ssl.keystore.location"] == str(tmp_path / "kafka-broker.pem")
    assert props["ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert props["ssl.endpoint.identification.algorithm"] == "https"
    assert not [k for k in props if "password" in k]  # no key store password at all
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'username="admin"' in jaas and f'password="{"A" * 43}"' in jaas


@pytest.mark.parametrize("password", ["short", 'quote"d-password-long-enough', "a,b]=c" * 4])
def test_a_password_unsafe_in_jaas_or_storage_tool_is_refused(
    tmp_path: Path, password: str
) -> None:
    with pytest.raises(ValidationError, match="admin_password"):
        BrokerSecurity(
            keystore=tmp_path / "k", ca_file=tmp_path / "c", admin_password=SecretStr(password)
        )


def test_the_scram_argument_names_the_admin(tmp_path: Path) -> None:
    assert _security(tmp_path).scram_argument() == f"SCRAM-SHA-512=[name=admin,password={'A' * 43}]"


def test_secrets_are_made_once_private_and_reused(tmp_path: Path) -> None:
    first = broker_security(tmp_path / "secrets")
    files = list((tmp_path / "secrets").iterdir())
    assert {f.name for f in files} == {"ca.pem", "ca.key", ADMIN_PASSWORD, BROKER_KEYSTORE}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    keystore = first.keystore.read_bytes()
    second = broker_security(tmp_path / "secrets")
    assert second.admin_password == first.admin_password
    assert second.keystore.read_bytes() == keystore
    assert len(first.admin_password.get_secret_value()) >= 32


def test_the_broker_certificate_is_for_loopback_and_both_ends(tmp_path: Path) -> None:
    security = broker_security(tmp_path)
    cert, issuer = x509.load_pem_x509_certificates(security.keystore.read_bytes())
    assert issuer.public_bytes(Encoding.PEM) == security.ca_file.read_bytes()
    cert.verify_directly_issued_by(issuer)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}


def test_a_given_ca_issues_the_broker_certificate_anew(tmp_path: Path) -> None:
    broker_security(tmp_path)
    ca = new_ca("the deployment's CA")
    security = broker_security(tmp_path, ca=ca)
    assert security.ca_file.read_bytes() == ca.cert
    cert = x509.load_pem_x509_certificates(security.keystore.read_bytes())[0]
    cert.verify_directly_issued_by(ca.certificate())


def test_a_secret_others_may_read_is_refused(tmp_path: Path) -> None:
    broker_security(tmp_path)
    (tmp_path / ADMIN_PASSWORD).chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        broker_security(tmp_path)


@pytest.mark.parametrize("content", [b"", b"short", b"has spaces in it, long enough", b"\xff" * 40])
def test_a_malformed_password_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    broker_security(tmp_path)
    (tmp_path / ADMIN_PASSWORD).write_bytes(content)
    with pytest.raises(ConfigError, match="no usable password"):
        broker_security(tmp_path)


def test_a_damaged_ca_is_one_clear_error(tmp_path: Path) -> None:
    broker_security(tmp_path)
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    with pytest.raises(ConfigError, match=r"the CA in .* is unusable"):
        broker_security(tmp_path)


def test_a_damaged_keystore_is_issued_anew(tmp_path: Path) -> None:
    first = broker_security(tmp_path)
    first.keystore.write_bytes(b"not a pem")
    second = broker_security(tmp_path)
    assert len(x509.load_pem_x509_certificates(second.keystore.read_bytes())) == 2


# --- the ACL table ----------------------------------------------------------------------


def test_the_producer_may_only_write_samples_and_feedback_and_read_stream_definitions() -> None:
    table = acl_table(TOPICS)
    assert table["producer"] == {
        Grant(TOPIC, TOPICS.raw, WRITE),
        Grant(TOPIC, TOPICS.feedback, WRITE),  # `SampleProducer.feedback`
        Grant(TOPIC, TOPICS.streams, READ),  # `produce --file` maps columns by the schema
        Grant(GROUP, "streamlearn-catalog-", READ, True),
    }
    assert allowed(table, "producer", TOPIC, TOPICS.raw, WRITE)
    assert allowed(table, "producer", TOPIC, TOPICS.feedback, WRITE)
    hidden = (TOPICS.train, TOPICS.dlq, TOPICS.metrics, TOPICS.model_events, TOPICS.predictions)
    for topic in (*hidden, TOPICS.streams, TOPICS.joiner_state):
        assert not allowed(table, "producer", TOPIC, topic, WRITE)
    for topic in (*hidden, TOPICS.joiner_state):
        assert not allowed(table, "producer", TOPIC, topic, DESCRIBE)
    assert not allowed(table, "producer", TOPIC, TOPICS.raw, READ)
    assert not allowed(table, "producer", TOPIC, TOPICS.feedback, READ)


def test_ingestion_reads_samples_and_writes_its_outputs_transactionally() -> None:
    table = acl_table(TOPICS)
    group = IngestionSettings().consumer_group
    for op in (READ, WRITE, Operation.DESCRIBE_CONFIGS):
        assert allowed(table, "ingestion", TOPIC, TOPICS.raw, op)
    for topic in (TOPICS.train, TOPICS.dlq):
        assert allowed(table, "ingestion", TOPIC, topic, WRITE)
        assert not allowed(table, "ingestion", TOPIC, topic, READ)
        assert not allowed(table, "ingestion", TOPIC, topic, Operation.ALTER)
    assert allowed(table, "ingestion", GROUP, group, READ)
    assert not allowed(table, "ingestion", GROUP, "streamlearn-trainer-demo", READ)
    assert allowed(table, "ingestion", TXN, f"{group}-0", WRITE)
    assert not allowed(table, "ingestion", TXN, "someone-else", WRITE)
    assert allowed(table, "ingestion", TOPIC, TOPICS.streams, READ)
    assert not allowed(table, "ingestion", TOPIC, TOPICS.metrics, WRITE)
    # gRPC Ingest publishes feedback; the joiner's topics are none of its business.
    assert allowed(table, "ingestion", TOPIC, TOPICS.feedback, WRITE)
    assert not allowed(table, "ingestion", TOPIC, TOPICS.feedback, READ)
    for topic in (TOPICS.predictions, TOPICS.joiner_state):
        assert not allowed(table, "ingestion", TOPIC, topic, DESCRIBE)


def test_ingestion_may_grow_its_outputs_only_when_configured() -> None:
    table = acl_table(TOPICS, AccessNames(ingestion_grows_outputs=True))
    assert allowed(table, "ingestion", TOPIC, TOPICS.train, Operation.ALTER)
    assert not allowed(table, "ingestion", TOPIC, TOPICS.raw, Operation.ALTER)


def test_the_trainer_reads_training_records_and_writes_metrics() -> None:
    table = acl_table(TOPICS)
    group = TrainerSettings(model_name="ctr").consumer_group
    assert allowed(table, "trainer", TOPIC, TOPICS.train, READ)
    assert allowed(table, "trainer", TOPIC, TOPICS.metrics, WRITE)
    assert allowed(table, "trainer", GROUP, group, READ)
    assert not allowed(table, "trainer", TOPIC, TOPICS.raw, WRITE)
    assert not allowed(table, "trainer", TOPIC, TOPICS.train, WRITE)
    assert not allowed(table, "trainer", GROUP, IngestionSettings().consumer_group, READ)
    assert not allowed(table, "trainer", TOPIC, TOPICS.model_events, WRITE)


def test_registry_inference_and_reader() -> None:
    table = acl_table(TOPICS)
    assert table["registry"] == {Grant(TOPIC, TOPICS.model_events, WRITE)}
    assert table["inference"] == {
        Grant(TOPIC, TOPICS.model_events, READ),
        Grant(TOPIC, TOPICS.predictions, WRITE),  # the prediction log
        Grant(GROUP, "inference-", READ, prefixed=True),
    }
    assert allowed(table, "reader", TOPIC, TOPICS.metrics, READ)
    assert allowed(table, "reader", TOPIC, TOPICS.model_events, READ)
    assert allowed(table, "reader", GROUP, "streamlearn-watch", READ)
    names = [v for v in TOPICS.model_dump().values() if isinstance(v, str)]
    assert len(names) == 9
    assert not any(allowed(table, "reader", TOPIC, t, WRITE) for t in names)


def test_no_principal_creates_deletes_or_administers() -> None:
    table = acl_table(TOPICS)
    assert set(table) == {
        *("ingestion", "trainer", "registry", "inference", "joiner", "producer", "reader")
    }
    operations = {g.operation for grants in table.values() for g in grants}
    assert operations <= {READ, WRITE, Operation.DESCRIBE_CONFIGS}
    assert all(
        g.resource is not Resource.TOPIC or not g.prefixed for gs in table.values() for g in gs
    )


def test_the_table_follows_renamed_topics() -> None:
    topics = TopicSettings(raw="acme.raw", train="acme.train")
    table = acl_table(topics)
    assert allowed(table, "producer", TOPIC, "acme.raw", WRITE)
    assert not allowed(table, "producer", TOPIC, TOPICS.raw, WRITE)
    assert allowed(table, "trainer", TOPIC, "acme.train", READ)


# --- faust ------------------------------------------------------------------------------


def test_faust_connects_with_sasl_ssl_from_the_same_settings(tmp_path: Path) -> None:
    security = broker_security(tmp_path)
    kafka = security.admin_settings("127.0.0.1:9092")
    credentials = _credentials(IngestionSettings(kafka=kafka))
    assert credentials is not None
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"  # type: ignore[union-attr]
    assert credentials.username == "admin"  # type: ignore[union-attr]
    assert credentials.ssl_context is not None  # type: ignore[union-attr]
    assert credentials.ssl_context.get_ca_certs()  # type: ignore[union-attr]


def test_faust_stays_plain_text_without_security() -> None:
    assert _credentials(IngestionSettings(kafka=KafkaSettings())) is None


def test_faust_takes_tls_without_sasl(tmp_path: Path) -> None:
    broker_security(tmp_path)
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_location=tmp_path / "ca.pem")
    credentials = _credentials(IngestionSettings(kafka=kafka))
    assert credentials is not None and credentials.protocol.value == "SSL"


# --- the data directory's security mode -------------------------------------------------


def test_a_directory_formatted_before_layouts_counts_as_plain(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("node.id=1\n")
    LocalBroker(BrokerConfig(state_dir=tmp_path))._check_layout()  # as before: accepted
    secure = BrokerConfig(state_dir=tmp_path, security=_security(tmp_path))
    with pytest.raises(BrokerError, match=r"holds a plain-text .* cannot start as a secure"):
        LocalBroker(secure)._check_layout()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_a_malformed_layout_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "broker.json").write_bytes(content.encode(errors="surrogateescape"))
    with pytest.raises(BrokerError, match=r"broker\.json"):
        LocalBroker(BrokerConfig(state_dir=tmp_path))._check_layout()
