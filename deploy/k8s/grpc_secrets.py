"""Make the gRPC credentials of a Kubernetes deployment and say how to load them.

    .venv/bin/python deploy/k8s/grpc_secrets.py DIR [--namespace NS] [--certificates]

Writes into DIR (a new or empty directory, 0700; every file 0600), one folder per Secret the
manifests mount, and prints the `kubectl create secret` commands that load them; it prints
no secret value and talks to no cluster:

- `streamlearn-grpc-auth/`: `token.pub` (verifies signed tokens), `static-tokens.json` (the
  sha256 of each static token, with its principal and roles), and the static tokens the
  trainer and inference send to the registry (`trainer.token`, `inference.token`).
- `users/<role>.token`: a static token for each user role (producer, reader, promoter,
  admin), to hand to people and programs; `token.key` signs tokens
  (`shared.security.tokens.mint`). Neither goes into the cluster.
- with `--certificates` (the local overlay: no cert-manager), `<service>-grpc-tls/` with
  `tls.crt`, `tls.key` and `ca.crt` for each service, valid for its Service's DNS names and
  for client authentication (the registry takes mutual TLS only: the trainer's and
  inference's certificates carry their role as the subject OU, the registry's own, without
  a role, is what its health probes present); `ca/` (keep `ca.key` offline; clients trust
  `ca.crt`); and `users/<role>.crt` / `.key`, a client certificate per user role (CN and OU
  the role) for the registry's mutual TLS: a client sets `STREAMLEARN_SECURITY__TLS=true`,
  `STREAMLEARN_SECURITY__CA_FILE` (`ca/ca.crt`), `STREAMLEARN_SECURITY__CERT_FILE` /
  `STREAMLEARN_SECURITY__KEY_FILE` (its role's pair) and `STREAMLEARN_SECURITY__TOKEN` (its
  role's token). Production issues the users' certificates with cert-manager.

Rotation: run again into a new directory, replace the Secrets (`kubectl delete secret ...`
then the printed commands), restart the workloads, hand out the new user tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from shared.security import pki
from shared.security.roles import CALLING_SERVICES as CALLERS
from shared.security.roles import USER_ROLES
from shared.security.secret_files import kubectl_commands, new_directory
from shared.security.tokens import new_signing_key, new_static_token, token_digest

AUTH_SECRET = "streamlearn-grpc-auth"
SERVICES = ("registry", "ingestion", "trainer", "joiner", "inference")
# The services that call another one (the registry), each as the principal of its own role.
# Services whose certificate also names another Service selecting the same pods.
EXTRA_SERVICES = {"inference": ("inference-headless",)}


def tls_secret(service: str) -> str:
    """The Secret holding `service`'s certificate, key and CA (what the workload mounts)."""
    return f"{service}-grpc-tls"


def dns_names(service: str, namespace: str) -> list[str]:
    """Every name a client may use for `service`'s Services in `namespace`."""
    names: list[str] = []
    for name in (service, *EXTRA_SERVICES.get(service, ())):
        domain = f"{name}.{namespace}"
        names += [name, domain, f"{domain}.svc", f"{domain}.svc.cluster.local"]
    return names


def write_tokens(out: Path) -> None:
    """The token verifiers, the callers' tokens and the users' tokens (see the module)."""
    key = new_signing_key()
    pki.write_private(out / "token.key", key.private)
    auth = out / AUTH_SECRET
    pki.write_private(auth / "token.pub", key.public)
    static: dict[str, dict[str, object]] = {}
    for name in (*CALLERS, *USER_ROLES):
        token = new_static_token()
        static[token_digest(token)] = {"principal": name, "roles": [name]}
        folder = auth if name in CALLERS else out / "users"
        pki.write_private(folder / f"{name}.token", token.encode("ascii"))
    document = json.dumps(static, indent=2, sort_keys=True) + "\n"
    pki.write_private(auth / "static-tokens.json", document.encode("ascii"))


def write_certificates(out: Path, namespace: str) -> None:
    """A CA, per service a certificate for its Service names, per user role a client one.

    Every service certificate is for a server and a client: the registry requires a client
    certificate of every caller (mutual TLS), so the callers' carry their role as subject OU
    (the role they act with when they send no token), and the registry's own, with no role,
    is what its probes present (health needs a certificate there, never a role).
    """
    ca = pki.new_ca("streamlearn gRPC CA")
    pki.write_private(out / "ca" / "ca.crt", ca.cert)
    pki.write_private(out / "ca" / "ca.key", ca.key)
    for service in SERVICES:
        roles = [service] if service in CALLERS else []
        hosts = dns_names(service, namespace)
        pair = pki.issue(ca, service, hosts=hosts, server=True, client=True, roles=roles)
        folder = out / tls_secret(service)
        pki.write_private(folder / "tls.crt", pair.cert)
        pki.write_private(folder / "tls.key", pair.key)
        pki.write_private(folder / "ca.crt", ca.cert)
    for role in USER_ROLES:
        pair = pki.issue(ca, role, client=True, roles=[role])
        pki.write_private(out / "users" / f"{role}.crt", pair.cert)
        pki.write_private(out / "users" / f"{role}.key", pair.key)


def secret_folders(out: Path) -> list[Path]:
    """The folders of `out` that become Secrets, in a stable order."""
    names = [AUTH_SECRET, *(tls_secret(s) for s in SERVICES)]
    return [out / name for name in names if (out / name).is_dir()]


def _arguments(argv: Iterable[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy/k8s/grpc_secrets.py",
        description="make the gRPC credentials of a Kubernetes deployment (no value printed)",
    )
    parser.add_argument("out", type=new_directory, help="a new or empty directory")
    parser.add_argument("--namespace", default="streamlearn", help="the overlay's namespace")
    parser.add_argument(
        "--certificates",
        action="store_true",
        help="also a CA and each service's TLS certificate (no cert-manager: the local overlay)",
    )
    return parser.parse_args(list(argv))


def main(argv: Iterable[str]) -> int:
    """Write the credentials and print how to load them; the exit status."""
    arguments = _arguments(argv)
    out: Path = arguments.out
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    write_tokens(out)
    if arguments.certificates:
        write_certificates(out, arguments.namespace)
    print(f"# credentials in {out} (0600); load them with:")
    for command in kubectl_commands(secret_folders(out), arguments.namespace):
        print(command)
    for line in user_hints(out, certificates=arguments.certificates):
        print(line)
    return 0


def user_hints(out: Path, *, certificates: bool) -> list[str]:
    """How a person or program of a user role reaches the services (paths, no value)."""
    users = out / "users"
    lines = ["# users: hand out a role's files; its client sets (the registry needs all four)"]
    lines.append(f'#   STREAMLEARN_SECURITY__TOKEN="$(cat {users}/<role>.token)"')
    lines.append("#   STREAMLEARN_SECURITY__TLS=true")
    if certificates:
        lines.append(f"#   STREAMLEARN_SECURITY__CA_FILE={out / 'ca' / 'ca.crt'}")
        lines.append(f"#   STREAMLEARN_SECURITY__CERT_FILE={users}/<role>.crt")
        lines.append(f"#   STREAMLEARN_SECURITY__KEY_FILE={users}/<role>.key")
    else:
        lines.append("#   STREAMLEARN_SECURITY__CA_FILE, __CERT_FILE, __KEY_FILE: the ca.crt,")
        lines.append("#   tls.crt and tls.key of the role's cert-manager Secret <role>-grpc-client")
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
