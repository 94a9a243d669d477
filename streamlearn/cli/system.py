"""`streamlearn up | status | down`: the whole system on this machine, supervised."""

from __future__ import annotations

import json
from typing import Any

import typer

from streamlearn.cli.context import settings_of
from streamlearn.system.status import drift_text, stopped

# rich, gRPC, Kafka and the settings classes are imported only when something runs:
# `status` with nothing running answers from pid files at once.


def up(
    ctx: typer.Context,
    timeout: float = typer.Option(300.0, min=1, help="Seconds to wait for every service."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="TLS, credentials and ACLs everywhere; clients source <state>/secrets/<role>.env.",
    ),
) -> None:
    """Start the local broker and the five services; return once each reports SERVING."""
    from streamlearn.system.control import LocalSystem
    from streamlearn.system.status import collect

    system = LocalSystem(settings_of(ctx))
    system.up(timeout, secure=secure)
    _show(collect(system))
    typer.echo(_security_line(system))
    typer.echo(f"logs: {system.layout.logs_dir}   stop: streamlearn down")


def _security_line(system: Any) -> str:
    """Whether what runs is secured, and what a client of it needs."""
    from streamlearn.system.secure import USER_ROLES

    secrets = system.settings.secrets()
    if secrets is None:
        return (
            "not secured (plaintext, no credentials: for a demo on this machine); "
            "`streamlearn up --secure` on a new state directory secures everything"
        )
    return (
        f"secured: TLS, tokens and Kafka SCRAM with ACLs; a client of role "
        f"{'/'.join(USER_ROLES)} sources {secrets.root}/<role>.env"
    )


def down(
    ctx: typer.Context,
    keep_kafka: bool = typer.Option(False, help="Leave the local broker running."),
) -> None:
    """Stop the services (each drains; the trainer checkpoints) and then the local broker."""
    from streamlearn.system.control import LocalSystem

    was_running = LocalSystem(settings_of(ctx)).down(stop_kafka=not keep_kafka)
    typer.echo("streamlearn stopped" if was_running else "streamlearn was not running")


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Each service's health, address, lag and restarts; models and the versions served.

    Exit code 0 when every service is healthy, 3 otherwise.
    """
    found = stopped()
    if found is None:  # something runs: ask it
        from streamlearn.system.control import LocalSystem
        from streamlearn.system.status import collect

        found = collect(LocalSystem(settings_of(ctx)))
    raise typer.Exit(_answer(found, as_json))


def status_if_stopped(as_json: bool) -> int | None:
    """`status` when nothing runs, from pid files alone; None when something runs.

    The entry point calls this before typer parses anything (typer's parsing loads
    pydantic): with nothing running, `streamlearn status` then costs little more than the
    interpreter's start.

    Returns:
        The exit code (3: nothing is healthy), or None: run the full command.

    """
    found = stopped()
    return None if found is None else _answer(found, as_json)


def _answer(found: dict[str, Any], as_json: bool) -> int:
    """Print the status; the exit code: 0 when every service is healthy, 3 otherwise."""
    if as_json:
        typer.echo(json.dumps(found, indent=1))
    elif found["supervisor"]["pid"] is None:
        typer.echo(not_running(found))
    else:
        _show(found)
    return 0 if all(s["healthy"] for s in found["services"]) else 3


def not_running(found: dict[str, Any]) -> str:
    """The plain answer when no supervisor runs (no table: every service is down)."""
    kafka = found["kafka"]
    return (
        f"kafka {kafka['state']} at {kafka['bootstrap']}\n"
        "streamlearn is not running: start it with `streamlearn up`"
    )


def _show(found: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

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
        models = Table("model", "latest version", "served version", "aliases", "trained", "drift")
        for m in found["models"]:
            aliases = ", ".join(f"{k}={v}" for k, v in sorted(m["aliases"].items()))
            models.add_row(
                m["name"],
                str(m["latest_version"]),
                str(m["served_version"] or "-"),
                aliases or "-",
                *trainer_cells(m.get("trainer")),
            )
        console.print(models)


def trainer_cells(trainer: dict[str, Any] | None) -> tuple[str, str]:
    """(trained, drift) cells of a model's row: events learned and skipped; drifts seen."""
    if trainer is None:
        return "-", "-"
    trained = f"{trainer['events_applied']:,} (skipped {trainer['events_skipped']:,})"
    return trained, drift_text(trainer) or "none"


def _health(service: dict[str, Any]) -> str:
    if service["healthy"]:
        return "[green]SERVING[/]"
    if service["answering"]:  # e.g. inference before a first version exists
        return "[yellow]up, not ready[/]"
    return "[red]down[/]"
