"""`streamlearn registry list|show|promote|rollback|alias|history|export-triton`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from services.registry import triton
from shared.clients.registry import RegistryClient
from streamlearn.cli.context import settings_of
from streamlearn.cli.reach import needs
from streamlearn.v1 import registry_pb2

app = typer.Typer(help="Inspect and steer the model registry.", no_args_is_help=True)
console = Console()


@contextmanager
def _client(ctx: typer.Context) -> Iterator[RegistryClient]:
    """A client of the configured registry; a registry that does not answer is named."""
    settings = settings_of(ctx)
    address, security = settings.registry_address, settings.grpc_security()
    with (
        needs("the registry", address, security),
        RegistryClient(address, security=security) as client,
    ):
        yield client


def _when(stamp: object) -> str:
    seconds = stamp.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _metrics(v: registry_pb2.ModelVersion) -> str:
    return ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.lineage.metrics.items()))


@app.command("list")
def list_(
    ctx: typer.Context,
    model: str = typer.Argument("", help="Versions of this model."),
    limit: int = typer.Option(20, min=1),
) -> None:
    """Models, or the newest versions of one model."""
    with _client(ctx) as client:
        if not model:
            table = Table("model", "latest", "aliases", "description", title="models")
            for m in client.list_models():
                aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items()))
                table.add_row(m.name, str(m.latest_version), aliases, m.description)
        else:
            table = Table(
                "version",
                "created (UTC)",
                "sha256",
                "bytes",
                "aliases",
                "events",
                "metrics",
                title=f"versions of {model}",
            )
            for v in client.list_versions(model, page_size=limit).versions:
                table.add_row(
                    str(v.version),
                    _when(v.created_at),
                    v.artifact.sha256[:12],
                    f"{v.artifact.size_bytes:,}",
                    ", ".join(v.aliases),
                    f"{v.lineage.events_seen:,}",
                    _metrics(v),
                )
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    model: str,
    version: int = typer.Option(0, help="0: newest"),
    alias: str = typer.Option("", help="e.g. production"),
) -> None:
    """One version with its lineage."""
    with _client(ctx) as client:
        v = client.get_version(model, version, alias)
    table = Table("field", "value", title=f"{model} v{v.version}", show_header=False)
    rows = [
        ("created (UTC)", _when(v.created_at)),
        ("aliases", ", ".join(v.aliases)),
        (
            "artifact",
            f"{v.artifact.format} {v.artifact.size_bytes:,} bytes sha256 {v.artifact.sha256}",
        ),
        ("stream", v.lineage.stream),
        ("events seen", f"{v.lineage.events_seen:,}"),
        (
            "offsets",
            "; ".join(
                f"{o.topic}[{o.partition}] {o.first_offset}..{o.next_offset}"
                for o in v.lineage.offsets
            ),
        ),
        ("metrics", _metrics(v)),
        ("config hash", v.lineage.config_hash),
        ("parent version", str(v.lineage.parent_version or "")),
        ("tags", ", ".join(f"{k}={t}" for k, t in sorted(v.tags.items()))),
    ]
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)


@app.command()
def promote(
    ctx: typer.Context,
    model: str,
    from_alias: str = "candidate",
    to_alias: str = "production",
    reason: str = typer.Option(..., help="Why."),
) -> None:
    """Point TO_ALIAS at the version FROM_ALIAS holds."""
    with _client(ctx) as client:
        record = client.promote(model, from_alias, to_alias, reason)
    console.print(f"{model}: {to_alias} {record.from_version or '-'} → {record.to_version}")


@app.command()
def rollback(
    ctx: typer.Context,
    model: str,
    alias: str = "production",
    reason: str = typer.Option(..., help="Why."),
) -> None:
    """Point ALIAS back at the version it held before."""
    with _client(ctx) as client:
        record = client.rollback(model, alias, reason)
    console.print(f"{model}: {alias} {record.from_version} → {record.to_version}")


@app.command()
def alias(
    ctx: typer.Context,
    model: str,
    name: str,
    version: int,
    expected: int = typer.Option(-1, help="Compare-and-set: current version (0: absent)."),
    reason: str = "",
) -> None:
    """Point alias NAME of MODEL at VERSION."""
    with _client(ctx) as client:
        client.set_alias(model, name, version, None if expected < 0 else expected, reason)
    console.print(f"{model}: {name} → {version}")


@app.command()
def history(ctx: typer.Context, model: str, limit: int = typer.Option(20, min=1)) -> None:
    """Alias moves, promotions and rollbacks, newest first."""
    with _client(ctx) as client:
        records = client.history(model, limit)
    table = Table(
        "time (UTC)",
        "action",
        "alias",
        "from",
        "to",
        "actor",
        "reason",
        title=f"history of {model}",
    )
    for r in records:
        table.add_row(
            _when(r.time),
            r.action,
            r.alias,
            str(r.from_version or "-"),
            str(r.to_version or "-"),
            r.actor,
            r.reason,
        )
    console.print(table)


@app.command("export-triton")
def export_triton(
    ctx: typer.Context,
    model: str,
    out: Path,
    last: int = typer.Option(1, min=1, help="How many newest versions."),
) -> None:
    """Write <OUT>/<model>/<version>/model.onnx and config.pbtxt for NVIDIA Triton."""
    with _client(ctx) as client:
        versions = [v.version for v in client.list_versions(model, page_size=last).versions]
        written = triton.export(client, model, out, versions)
    console.print(f"wrote {len(written)} version(s) of {model} under {out / model}")
