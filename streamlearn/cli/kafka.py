"""`streamlearn kafka start|stop|status`: the project's own single-node broker."""

from __future__ import annotations

import json

import typer

from shared.kafka.local.broker import BrokerStatus, LocalBroker
from streamlearn.cli.context import settings_of

app = typer.Typer(help="Run the project's own Apache Kafka broker (KRaft, one node, loopback).")


def _print(status: BrokerStatus, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status.__dict__))
        return
    where = f" at {status.bootstrap}" if status.state != "stopped" else ""
    pid = f" (pid {status.pid})" if status.pid else ""
    detail = f": {status.detail}" if status.detail else ""
    typer.echo(f"kafka {status.state}{where}{pid}{detail}")


@app.command()
def start(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Resolve jars (once), format storage (once), start and wait until the broker answers."""
    broker = LocalBroker(settings_of(ctx).broker_config())
    _print(broker.start(), as_json)


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the broker with SIGTERM (clean shutdown); its data stays for the next start."""
    stopped = LocalBroker(settings_of(ctx).broker_config()).stop()
    typer.echo("kafka stopped" if stopped else "kafka was not running")


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Say whether the broker runs and answers; exit 0 only when it does."""
    current = LocalBroker(settings_of(ctx).broker_config()).status()
    _print(current, as_json)
    raise typer.Exit(0 if current.state == "running" else 3)
