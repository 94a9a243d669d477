"""Entry point of the `streamlearn` command.

Only typer is imported up front: each sub-command's module (and whatever it needs, up to
torch for `replay`) is imported when that sub-command runs, so `--help`, `--version`,
`status` and the other light commands answer at once.
"""

from __future__ import annotations

import sys

import typer

from streamlearn.cli.failures import report
from streamlearn.cli.lazy import Lazy, LazyGroup


class _Root(LazyGroup):
    # A summary of each sub-command, listed by `--help` without importing it.
    lazy = {
        "up": Lazy(
            "streamlearn.cli.system",
            "up",
            "Start the broker and the five services; wait until ready.",
        ),
        "status": Lazy(
            "streamlearn.cli.system",
            "status",
            "Health, lag and restarts of each service; models served.",
        ),
        "down": Lazy(
            "streamlearn.cli.system",
            "down",
            "Stop the services (drained, checkpointed), then the broker.",
        ),
        "demo": Lazy(
            "streamlearn.cli.demo",
            "demo",
            "Stream a drifting dataset through everything; watch it learn.",
        ),
        "doctor": Lazy(
            "streamlearn.cli.doctor",
            "doctor",
            "Check this machine's set-up, one line each with a fix.",
        ),
        "produce": Lazy(
            "streamlearn.cli.produce",
            "produce",
            "Publish samples (synthetic, CSV or JSONL) to the raw topic.",
        ),
        "stream": Lazy(
            "streamlearn.cli.streams", "app", "Define the streams ingestion validates against."
        ),
        "registry": Lazy(
            "streamlearn.cli.registry", "app", "Inspect and steer the model registry."
        ),
        "replay": Lazy(
            "streamlearn.cli.replay",
            "app",
            "Replay a topic slice: backtest, evaluate, search, redrive.",
        ),
        "kafka": Lazy(
            "streamlearn.cli.kafka",
            "app",
            "Start, stop or check the project's own Kafka broker.",
        ),
        "bench": Lazy(
            "streamlearn.cli.bench",
            "bench",
            "Measure a part of streamlearn beside its baseline.",
        ),
        "generate": Lazy(
            "streamlearn.cli.generate",
            "generate",
            "Continue a prompt with a served language model, streamed to stdout.",
        ),
    }


class _Invocation:
    """What the root options said, for the error report after typer has returned."""

    verbose = False


_typer_app = typer.Typer(
    cls=_Root,
    help="streamlearn: online learning from Kafka streams, served over KServe V2 gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@_typer_app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Debug logs; the cause chain of errors; all versions."
    ),
    version: bool = typer.Option(
        False, "--version", help="Print the version (with --verbose: Kafka, torch, ...) and exit."
    ),
) -> None:
    _Invocation.verbose = verbose
    if version:
        from streamlearn.cli.version import versions

        typer.echo(versions(verbose))
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:  # e.g. `streamlearn -v` alone
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    import logging

    from shared.logs import configure_logging

    configure_logging("cli", "DEBUG" if verbose else "WARNING", json_format=False)
    if not verbose:
        # librdkafka warns about retries it then wins (a fresh broker's coordinator still
        # loading); an outage is still reported, once, on `streamlearn.kafka` itself.
        logging.getLogger("streamlearn.kafka.client").setLevel(logging.ERROR)


def app() -> None:
    """Run the CLI; an expected failure becomes one clear line on stderr and an exit code."""
    if sys.argv[1:] in (["status"], ["status", "--json"]):
        # Nothing running is answered from pid files before typer sets up (see status).
        from streamlearn.cli.system import status_if_stopped

        code = status_if_stopped(as_json=len(sys.argv) == 3)
        if code is not None:
            sys.exit(code)
    try:
        _typer_app()  # standalone: usage errors (exit 2) and Ctrl-C are handled by typer itself
    except Exception as exc:
        code = report(exc, verbose=_Invocation.verbose)
        if code is None:
            raise  # a bug: its traceback is the report
        sys.exit(code)
