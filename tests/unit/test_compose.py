"""The compose overrides and images of `make compose-test`, checked without a Docker engine.

docker-compose.local.yml (images built here) and docker-compose.host.yml (host networking)
must keep agreeing with docker-compose.yml, the Dockerfiles and the Kafka pom; the Kafka
image's entrypoint must turn the apache/kafka environment convention into server.properties.
The real run is `make compose-test` (scripts/compose-test.sh).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from shared.errors import ConfigError
from shared.kafka.local.files import BrokerConfig, BrokerSecurity, server_properties
from shared.security.kafka_acl import acl_table
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.system.plan import local_plan
from streamlearn.system.secure import LocalSecrets
from tests.deploy import ROOT, SERVICES, settings_class


class _Loader(yaml.SafeLoader):
    """Reads compose's `!reset` tag (drop the merged value) as a marker."""


RESET = "<reset>"
_Loader.add_constructor("!reset", lambda loader, node: RESET)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=_Loader)
    return loaded


BASE = _load("docker-compose.yml")
LOCAL = _load("docker-compose.local.yml")
HOST = _load("docker-compose.host.yml")
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
KAFKA_DOCKERFILE = (ROOT / "deploy" / "docker" / "kafka.Dockerfile").read_text()
PRIVATE = re.compile(r"\b(10\.\d+|172\.(1[6-9]|2\d|3[01])|192\.168)\.\d+\.\d+")


def _expand(value: str) -> str:
    """Compose's `${NAME:-default}` with every variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_overrides_name_exactly_the_compose_services() -> None:
    assert set(LOCAL["services"]) == set(BASE["services"]) == set(HOST["services"])
    assert set(BASE["services"]) == {*SERVICES, "kafka"}


def test_no_compose_file_declares_a_network_or_a_private_address() -> None:
    for name in ("docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.local.yml"):
        assert "networks" not in _load(name)
    assert "networks" not in HOST
    for path in ROOT.glob("docker-compose*.yml"):
        assert not PRIVATE.search(path.read_text()), f"{path.name} names a private address"


def test_the_host_override_puts_every_service_on_the_host_network_only() -> None:
    for name, spec in HOST["services"].items():
        assert spec["network_mode"] == "host", name
        assert spec["ports"] == RESET, f"{name}: published ports mean nothing on the host network"
        assert "networks" not in spec


def test_host_mode_addresses_are_loopback_and_ports_agree() -> None:
    env = {name: spec["environment"] for name, spec in HOST["services"].items()}
    ports = {
        service: int(_expand(env[service][f"{service.upper()}_GRPC_PORT"])) for service in SERVICES
    }
    assert ports == {s: settings_class(s).model_fields["grpc_port"].default for s in SERVICES}
    kafka = env["kafka"]
    internal = _expand(kafka["KAFKA_ADVERTISED_LISTENERS"]).split(",")[0]
    assert internal == "PLAINTEXT://127.0.0.1:19092"
    for listener in _expand(kafka["KAFKA_LISTENERS"]).split(","):
        assert "://127.0.0.1:" in listener, listener
    for service in SERVICES:
        values = {k: _expand(str(v)) for k, v in env[service].items()}
        assert values[f"{service.upper()}_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
        for name, value in values.items():
            assert name.startswith(f"{service.upper()}_")
            if name.endswith("_ADDRESS"):
                host, port = value.split(":")
                assert host == "127.0.0.1"
                assert (
                    int(port)
                    == ports[name.removeprefix(f"{service.upper()}_").split("_")[0].lower()]
                )
        probe = [_expand(str(part)) for part in HOST["services"][service]["healthcheck"]["test"]]
        assert f"127.0.0.1:{ports[service]}" in probe
        # The probe checks the same health name the base file does.
        assert probe[-1] == BASE["services"][service]["healthcheck"]["test"][-1]


def test_every_host_mode_port_can_be_moved() -> None:
    text = (ROOT / "docker-compose.host.yml").read_text()
    body = text[text.index("services:") :]
    for match in re.finditer(r"127\.0\.0\.1:([^,\s\"]+)", body):
        assert match.group(1).startswith("${STREAMLEARN_"), match.group(0)


def test_the_local_override_uses_images_built_here() -> None:
    pom = (ROOT / "deploy" / "local" / "kafka" / "pom.xml").read_text()
    (version,) = re.findall(r"<kafka.version>(.+)</kafka.version>", pom)
    # The default stays the official image for users; the override selects the local one.
    assert BASE["services"]["kafka"]["image"] == f"apache/kafka:{version}"
    kafka = LOCAL["services"]["kafka"]
    assert kafka["image"] == f"streamlearn-kafka:{version}"
    assert kafka["pull_policy"] == "never"
    assert kafka["healthcheck"]["test"][:2] == ["CMD", "/opt/kafka/bin/healthcheck.sh"]
    for service in SERVICES:
        assert LOCAL["services"][service] == {"build": RESET, "pull_policy": "never"}


def test_only_the_trainer_runs_the_image_with_torch() -> None:
    for service in SERVICES:
        spec = BASE["services"][service]
        image, target = spec["image"], spec["build"]["target"]
        if service == "trainer":
            assert (image, target) == ("streamlearn:latest", "runtime")
        else:
            assert (image, target) == ("streamlearn:slim", "runtime-slim")
        assert f"AS {target}\n" in DOCKERFILE


def test_the_dockerfile_defaults_to_the_official_python_image() -> None:
    assert "ARG BASE_IMAGE=python:3.11-slim\n" in DOCKERFILE
    assert "ARG BASE_IMAGE=eclipse-temurin:17-jre\n" in KAFKA_DOCKERFILE
    # A `# syntax=` directive would pull the frontend from a registry.
    for text in (DOCKERFILE, KAFKA_DOCKERFILE):
        assert not re.search(r"^#\s*syntax=", text, re.MULTILINE)


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[-1].strip(): part for part in parts}


def test_runtime_stages_are_non_root_labelled_and_without_build_tools() -> None:
    stages = _stages(DOCKERFILE)
    base = stages["runtime-base"]
    assert re.search(r"^USER 10001:10001$", base, re.MULTILINE)
    for label in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in base
    for name in ("runtime-slim", "runtime"):
        stage = stages[name]
        assert stage.startswith("runtime-base AS")
        # Only the virtual environment and the installed project cross over: no uv, no
        # wheels, no source tree.
        deps = "deps-slim" if name == "runtime-slim" else "deps-full"
        assert re.findall(r"^COPY .*$", stage, re.MULTILINE) == [
            f"COPY --from={deps} /opt/venv /opt/venv",
            "COPY --from=project /opt/streamlearn /opt/streamlearn",
        ]
        assert "RUN " not in stage
    assert "USER 1000:1000" in KAFKA_DOCKERFILE
    assert "org.opencontainers.image.title" in KAFKA_DOCKERFILE


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    ]
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # an allowlist
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.MULTILINE):
        for source in line.split()[:-1]:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_kafka_entrypoint_writes_server_properties_from_the_environment(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    java = fake / "java"
    java.write_text('#!/bin/sh\necho "$@" >> "$STREAMLEARN_KAFKA_RUN_DIR/java.calls"\n')
    java.chmod(0o755)
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "STREAMLEARN_KAFKA_RUN_DIR": str(tmp_path / "run"),
        "CLUSTER_ID": "test-cluster",
        "KAFKA_HEAP_OPTS": "-Xmx1m",
        **{k: str(v) for k, v in BASE["services"]["kafka"]["environment"].items()},
        "KAFKA_SOME___DASHED__UNDER_SCORE": "x",
    }
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker" / "kafka" / "entrypoint.sh")],
        env=env,
        check=True,
        timeout=30,
    )
    run = tmp_path / "run"
    properties = dict(
        line.split("=", 1) for line in (run / "server.properties").read_text().splitlines()
    )
    assert properties["node.id"] == "1"
    assert properties["controller.quorum.voters"] == "1@kafka:9093"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["some-dashed_under.score"] == "x"
    assert "heap.opts" not in properties
    format_call, broker_call = (run / "java.calls").read_text().splitlines()
    assert "kafka.tools.StorageTool format --ignore-formatted -t test-cluster" in format_call
    assert "--standalone" not in format_call  # the voters are configured
    assert broker_call.startswith("-Xmx1m ")
    assert broker_call.endswith(f"kafka.Kafka {run / 'server.properties'}")


# The secured stack (docker-compose.secure.yml, scripts/compose-secrets.py). It must run each
# service exactly as `streamlearn up --secure` does (streamlearn.system.plan), with no value of
# a secret in any compose file.

SECURE = _load("docker-compose.secure.yml")
MOUNT = "/run/secrets/streamlearn"
SECRET_VARIABLE = "${STREAMLEARN_COMPOSE_SECRETS:?"
# Environment names whose values would be secrets; `_FILE` names only point at files.
SECRET_NAME = re.compile(r"PASSW|SECRET|TOKEN|CREDENTIAL|PRIVATE|JAAS", re.IGNORECASE)
# PEM, a JWT, a JAAS or --add-scram password, a `token_urlsafe(32)` password (43 characters
# of both cases and digits).
SECRET_TEXT = re.compile(
    r"-----BEGIN|eyJ[A-Za-z0-9_-]{8,}|(?i:password=)"
    r"|(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[a-z])(?=[\w-]*[A-Z])[\w-]{43}(?![\w-])"
)


def _script(name: str) -> ModuleType:
    path = ROOT / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SECRETS = _script("compose-secrets.py")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The stack's secrets as scripts/compose-secrets.py makes them, owned by this user."""
    state = tmp_path_factory.mktemp("compose-secrets")
    owners = dict.fromkeys(SECRETS.default_owners(), os.getuid())
    return SECRETS.make(
        state,
        kafka="127.0.0.1:9092",
        registry="127.0.0.1:50052",
        inference="127.0.0.1:8001",
        owners=owners,
    )


def _secure_env(service: str) -> dict[str, str]:
    return {k: _expand(str(v)) for k, v in SECURE["services"][service]["environment"].items()}


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_secure_override_is_the_stack_plus_its_provisioning_on_the_host_network() -> None:
    assert set(SECURE["services"]) == set(BASE["services"]) | {"kafka-init"}
    assert "networks" not in SECURE
    for name, spec in SECURE["services"].items():
        assert spec["network_mode"] == "host", name  # the certificates name 127.0.0.1
        assert spec["ports"] == RESET, name
    init = SECURE["services"]["kafka-init"]
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for service in SERVICES:
        depends = SECURE["services"][service]["depends_on"]
        assert depends["kafka-init"] == {"condition": "service_completed_successfully"}


def test_every_service_runs_with_the_security_of_up_secure(made: Any) -> None:
    """TLS, tokens, certificates and SCRAM: the variables `local_plan` sets, none missing.

    Paths point at the service's own mount, holding copies of the very files `up --secure`
    uses; the values no setting reads from a file come from its env file in the secrets
    directory, never from the compose file.
    """
    state = made.root.parent
    specs = {s.name: s for s in local_plan(state, KafkaSettings(), made)}
    for service in SERVICES:
        prefix = f"{service.upper()}_"
        expected = {
            k: v
            for k, v in specs[service].env.items()
            if k.startswith((f"{prefix}SECURITY__", f"{prefix}KAFKA__"))
            and k != f"{prefix}KAFKA__BOOTSTRAP_SERVERS"
        }
        compose = _secure_env(service)
        from_file = _env_file(state / "compose" / f"{service}.env")
        assert stat.S_IMODE((state / "compose" / f"{service}.env").stat().st_mode) == 0o600
        assert set(compose) & set(from_file) == set()
        given = {k: v for k, v in (compose | from_file).items() if k in expected}
        assert given.keys() == expected.keys(), service
        assert compose[f"{prefix}SECURITY__TLS"] == compose[f"{prefix}SECURITY__AUTH"] == "true"
        assert compose[f"{prefix}KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        files = SECRETS.service_files(made, service)
        for name, want in expected.items():
            if name in from_file:
                assert from_file[name] == want, name
            elif want.startswith(str(state)):
                mounted = compose[name].removeprefix(f"{MOUNT}/")
                assert files[mounted] == Path(want), name
                copy = state / "compose" / service / mounted
                assert copy.read_bytes() == Path(want).read_bytes(), name
            else:
                assert compose[name].lower() == want.lower(), name
        assert set(from_file) == {
            k for k in expected if SECRET_NAME.search(k) and not k.endswith("_FILE")
        }


def test_each_service_mounts_only_its_own_files_read_only(made: Any) -> None:
    state = made.root.parent
    for service in SERVICES:
        spec = SECURE["services"][service]
        (mount,) = spec["volumes"]
        assert mount["type"] == "bind" and mount["read_only"] is True
        assert mount["target"] == MOUNT
        assert mount["bind"] == {"create_host_path": False}
        assert mount["source"].startswith(SECRET_VARIABLE)
        assert mount["source"].endswith(f"}}/compose/{service}")
        assert spec["env_file"].startswith(SECRET_VARIABLE)
        assert spec["env_file"].endswith(f"}}/compose/{service}.env")
        copies = {p.name for p in (state / "compose" / service).iterdir()}
        assert copies == set(SECRETS.service_files(made, service))
        keys = {p for p in copies if p.endswith(".key")}
        assert keys == {f"{service}.key", "client-probe.key"}  # no other service's key
        used = re.findall(rf"{MOUNT}/([\w.-]+)", yaml.safe_dump(spec))
        assert set(used) <= copies, service


def test_every_service_logs_in_to_kafka_as_its_principal_of_the_acl_table(made: Any) -> None:
    table = acl_table(TopicSettings())
    for service in SERVICES:
        prefix = f"{service.upper()}_"
        env = _secure_env(service)
        assert env[f"{prefix}KAFKA__SASL_USERNAME"] == service
        assert service in table
        assert env[f"{prefix}KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
        # The broker's address as it advertises its only client listener.
        listener = _expand(SECURE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
        assert f"SASL_SSL://{env[f'{prefix}KAFKA__BOOTSTRAP_SERVERS']}" in listener.split(",")
    # kafka-init sets every principal's password: it has each one's file, and needs no file
    # it lacks (its mount is read-only, and `LocalSecrets` would make a missing one).
    mounted = made.root.parent / "compose" / "kafka-init"
    before = sorted(p.relative_to(mounted) for p in mounted.rglob("*"))
    found = LocalSecrets(mounted)
    assert found.broker.admin_user == "admin"
    for principal in table:
        assert found.kafka(principal, "127.0.0.1:9092").sasl_username == principal
    assert sorted(p.relative_to(mounted) for p in mounted.rglob("*")) == before


def test_kafka_init_provisions_principals_acls_and_topics_as_the_admin() -> None:
    init = SECURE["services"]["kafka-init"]
    assert init["image"] == "streamlearn:slim" and init["restart"] == "no"
    python, flag, code, bootstrap = init["command"]
    assert (python, flag) == ("python", "-c")
    compile(code, "kafka-init", "exec")  # a syntax error would only show at `up`
    # provision_kafka creates the principals, their ACLs and the topics (provision_deployment)
    for call in ("made = provision_kafka(found, sys.argv[1])", f'Path("{MOUNT}")'):
        assert call in code
    assert "$" not in code  # compose would interpolate it
    assert _expand(bootstrap) == "127.0.0.1:9092"
    (mount,) = init["volumes"]
    assert mount["read_only"] is True and mount["source"].endswith("}/compose/kafka-init")


def test_the_secure_broker_is_configured_as_the_local_secure_broker(tmp_path: Path) -> None:
    """The entrypoint's server.properties holds every security setting of `kafka start`'s."""
    password = "p" * 20 + "_-9"
    (tmp_path / "admin.password").write_text(password + "\n")
    run, calls = _run_entrypoint(tmp_path, tmp_path / "admin.password")
    assert calls.returncode == 0, calls.stderr
    written = dict(
        line.split("=", 1) for line in (run / "server.properties").read_text().splitlines()
    )
    assert stat.S_IMODE((run / "server.properties").stat().st_mode) == 0o600
    security = BrokerSecurity(
        keystore=Path(f"{MOUNT}/kafka-broker.pem"),
        ca_file=Path(f"{MOUNT}/ca.pem"),
        admin_password=SecretStr(password),
    )
    config = BrokerConfig(host="127.0.0.1", port=9092, controller_port=9093)
    plain = _properties(server_properties(config))
    secure = _properties(server_properties(config.model_copy(update={"security": security})))
    for key, value in secure.items():
        if plain.get(key) != value and key != "controller.quorum.bootstrap.servers":
            assert written.get(key) == value, key
    assert written["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert "PLAINTEXT" not in written["listener.security.protocol.map"]
    format_call, broker_call = (run / "java.calls").read_text().splitlines()
    assert f"--add-scram {security.scram_argument()}" in format_call
    assert password not in broker_call  # only the format step is given it
    # The broker's files are the ones compose-secrets.py puts into its mount.
    names = set(SECRETS.broker_files(_FakeSecrets(tmp_path)))
    used = re.findall(rf"{MOUNT}/([\w.-]+)", yaml.safe_dump(SECURE["services"]["kafka"]))
    assert set(used) == names


def test_the_entrypoint_refuses_an_unusable_admin_password(tmp_path: Path) -> None:
    (tmp_path / "admin.password").write_text("short pass'word\n")
    _, calls = _run_entrypoint(tmp_path, tmp_path / "admin.password")
    assert calls.returncode != 0
    assert "unusable" in calls.stderr and "pass'word" not in calls.stderr


def test_secure_healthchecks_probe_over_tls_with_the_probe_certificate() -> None:
    for service in SERVICES:
        test = [_expand(str(p)) for p in SECURE["services"][service]["healthcheck"]["test"]]
        assert test[:5] == ["CMD", "python", "-m", "shared.grpc.probe", test[4]]
        port = int(_secure_env(service)[f"{service.upper()}_GRPC_PORT"])
        assert test[4] == f"127.0.0.1:{port}"
        assert test[4] in [
            _expand(str(p)) for p in HOST["services"][service]["healthcheck"]["test"]
        ]
        options = dict(zip(test[-6::2], test[-5::2], strict=True))
        assert options == {
            "--ca": f"{MOUNT}/ca.pem",
            "--cert": f"{MOUNT}/client-probe.pem",
            "--key": f"{MOUNT}/client-probe.key",
        }
        # The same health name as the plain stack's probe.
        base = BASE["services"][service]["healthcheck"]["test"]
        assert test[5:-6] == base[5:]


def test_the_secure_override_moves_ports_as_the_host_override_does() -> None:
    for service in SERVICES:
        host, secure = HOST["services"][service]["environment"], _secure_env(service)
        for name, value in host.items():
            if not name.endswith("KAFKA__BOOTSTRAP_SERVERS"):  # secured: its TLS listener
                assert secure[name] == _expand(value), name
    text = (ROOT / "docker-compose.secure.yml").read_text()
    for match in re.finditer(r"127\.0\.0\.1:([^,\s\"]+)", text[text.index("services:") :]):
        assert match.group(1).startswith("${STREAMLEARN_"), match.group(0)


def test_no_compose_file_holds_a_secret_value(made: Any) -> None:
    values = [p.read_text().strip() for p in made.kafka_dir.glob("*.password")]
    values += [p.read_text().strip() for p in made.grpc_dir.glob("token-*")]
    assert len(values) >= 8
    for path in ROOT.glob("docker-compose*.yml"):
        text = path.read_text()
        assert not SECRET_TEXT.search(text), f"{path.name}: {SECRET_TEXT.search(text)}"
        assert not any(v in text for v in values), path.name
        for name, spec in _load(path.name)["services"].items():
            for key in spec.get("environment", {}):
                assert not (SECRET_NAME.search(key) and not key.endswith("_FILE")), (name, key)
    assert SECRET_TEXT.search("X: " + "aB3" * 14 + "z")  # the scan would see a password
    assert SECRET_TEXT.search(made.token("reader"))  # and a token


def test_the_secrets_are_private_and_owned_by_the_containers_users(tmp_path: Path) -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"USER {SECRETS.SERVICE_UID}:{SECRETS.SERVICE_UID}\n" in dockerfile
    assert f"USER {SECRETS.KAFKA_UID}:{SECRETS.KAFKA_UID}\n" in KAFKA_DOCKERFILE
    owners = dict.fromkeys(SECRETS.default_owners(), os.getuid())
    state = tmp_path / "state"
    SECRETS.make(state, kafka="k:1", registry="r:2", inference="i:3", owners=owners)
    for path in (state / "compose").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    # A value an env file could alter is refused, not written.
    with pytest.raises(ConfigError, match="env file"):
        SECRETS._write_env(tmp_path / "x.env", {"A_TOKEN": "abc\nB=1"})
    assert not (tmp_path / "x.env").exists()


def test_handing_a_copy_to_another_user_needs_root(tmp_path: Path) -> None:
    if os.getuid() == 0:
        # As root the copy is handed over: the container's user owns it.
        SECRETS._copy(tmp_path / "c", {"f": _private(tmp_path / "f")}, SECRETS.SERVICE_UID)
        assert (tmp_path / "c" / "f").stat().st_uid == SECRETS.SERVICE_UID
    else:
        with pytest.raises(ConfigError, match="run this as root"):
            SECRETS._copy(tmp_path / "c", {"f": _private(tmp_path / "f")}, SECRETS.SERVICE_UID)


def test_a_secret_readable_by_others_is_not_copied(tmp_path: Path) -> None:
    leaky = _private(tmp_path / "f")
    leaky.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        SECRETS._copy(tmp_path / "c", {"f": leaky}, os.getuid())


def _private(path: Path) -> Path:
    path.write_bytes(b"secret")
    path.chmod(0o600)
    return path


class _FakeSecrets:
    """What `broker_files` reads of a `LocalSecrets`, without making a CA."""

    def __init__(self, root: Path) -> None:
        self.kafka_dir = root
        self.broker = BrokerSecurity(
            keystore=root / "kafka-broker.pem",
            ca_file=root / "ca.pem",
            admin_password=SecretStr("x" * 16),
        )


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def _run_entrypoint(tmp_path: Path, password_file: Path) -> tuple[Path, Any]:
    """The Kafka image's entrypoint with the secured stack's environment, java faked."""
    fake = tmp_path / "bin"
    fake.mkdir()
    java = fake / "java"
    java.write_text('#!/bin/sh\necho "$@" >> "$STREAMLEARN_KAFKA_RUN_DIR/java.calls"\n')
    java.chmod(0o755)
    kafka = {
        **BASE["services"]["kafka"]["environment"],
        **LOCAL["services"]["kafka"]["environment"],
        **SECURE["services"]["kafka"]["environment"],
    }
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "STREAMLEARN_KAFKA_RUN_DIR": str(tmp_path / "run"),
        "CLUSTER_ID": "test-cluster",
        "KAFKA_HEAP_OPTS": "-Xmx1m",
        # As compose passes them: defaults filled in, `$$` read as `$`.
        **{k: _expand(str(v)).replace("$$", "$") for k, v in kafka.items()},
        "STREAMLEARN_KAFKA_ADMIN_PASSWORD_FILE": str(password_file),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker" / "kafka" / "entrypoint.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return tmp_path / "run", done
