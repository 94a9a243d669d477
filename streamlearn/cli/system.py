"""`streamlearn up | status | down`: the whole system on this machine, supervised."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from streamlearn.cli.context import settings_of
from streamlearn.system.control import LocalSystem
from streamlearn.system.status import collect


def up(
    ctx: typer.Context,
    timeout: float = typer.Option(300.0, min=1, help="Seconds to wait for every service."),
) -> None:
    """Start the local broker and the four services; return once each reports SERVING."""
    system = LocalSystem(settings_of(ctx))
    system.up(timeout)
    _show(collect(system))
    typer.echo(f"logs: {system.layout.logs_dir}   stop: streamlearn down")


def down(
    ctx: typer.Context,
    keep_kafka: bool = typer.Option(False, help="Leave the local broker running."),
) -> None:
    """Stop the services (each drains; the trainer checkpoints) and then the local broker."""
    stopped = LocalSystem(settings_of(ctx)).down(stop_kafka=not keep_kafka)
    typer.echo("streamlearn stopped" if stopped else "streamlearn was not running")


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Each service's health, address, lag and restarts; models and the versions served.

    Exit code 0 when every service is healthy, 3 otherwise.
    """
    found = collect(LocalSystem(settings_of(ctx)))
    if as_json:
        typer.echo(json.dumps(found, indent=1))
    else:
        _show(found)
    raise typer.Exit(0 if all(s["healthy"] for s in found["services"]) else 3)


def _show(found: dict[str, Any]) -> None:
    console = Console()
    kafka = found["kafka"]
    console.print(f"kafka {kafka['state']} at {kafka['bootstrap']}")
    table = Table("service", "state", "health", "address", "pid", "restarts", "lag", "up")
    for s in found["services"]:
        table.add_row(
            s["name"],
            s["state"],
            _health(s),
            s["address"],
            str(s["pid"] or "-"),
            str(s["restarts"]),
            "-" if s["lag"] is None else f"{s['lag']:,}",
            "-" if s["uptime_s"] is None else f"{s['uptime_s']:.0f}s",
        )
    console.print(table)
    if found["models"]:
        models = Table("model", "latest version", "served version", "aliases")
        for m in found["models"]:
            aliases = ", ".join(f"{k}={v}" for k, v in sorted(m["aliases"].items()))
            models.add_row(
                m["name"], str(m["latest_version"]), str(m["served_version"] or "-"), aliases or "-"
            )
        console.print(models)


def _health(service: dict[str, Any]) -> str:
    if service["healthy"]:
        return "[green]SERVING[/]"
    if service["answering"]:  # e.g. inference before a first version exists
        return "[yellow]up, not ready[/]"
    return "[red]down[/]"
