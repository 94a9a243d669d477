"""Entry point of the `streamlearn` command."""

from __future__ import annotations

import logging
import sys

import typer

from shared.errors import ConfigError, InvalidArgument, StreamlearnError
from shared.logs import configure_logging
from streamlearn.cli import bench, demo, kafka, produce, registry, replay, streams, system
from streamlearn.cli.settings import CliSettings

_typer_app = typer.Typer(
    help="streamlearn: online learning from Kafka streams, served over KServe V2 gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_typer_app.add_typer(kafka.app, name="kafka")
_typer_app.add_typer(registry.app, name="registry")
_typer_app.add_typer(streams.app, name="stream")
_typer_app.add_typer(replay.app, name="replay")
_typer_app.command("produce")(produce.produce)
_typer_app.command("bench")(bench.bench)
_typer_app.command("demo")(demo.demo)
_typer_app.command("up")(system.up)
_typer_app.command("status")(system.status)
_typer_app.command("down")(system.down)


@_typer_app.callback()
def _root(ctx: typer.Context, verbose: bool = typer.Option(False, "-v", "--verbose")) -> None:
    configure_logging("cli", "DEBUG" if verbose else "WARNING", json_format=False)
    if not verbose:
        # librdkafka warns about retries it then wins (e.g. a fresh broker's coordinator
        # still loading); the CLI reports real failures as errors.
        logging.getLogger("librdkafka").setLevel(logging.ERROR)
    ctx.obj = CliSettings()


def app() -> None:
    """Run the CLI; a domain error becomes one clear line on stderr and an exit code."""
    try:
        _typer_app()  # standalone: usage errors and Ctrl-C are handled by typer itself
    except StreamlearnError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2 if isinstance(exc, ConfigError | InvalidArgument) else 1)
