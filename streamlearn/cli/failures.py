"""Expected failures of a command as one line that says what to do, and their exit codes.

Exit codes: 1 for a failure (a service down, a refused request), 2 for a usage or
configuration error. Anything not recognised here is a bug and keeps its traceback.
"""

from __future__ import annotations

import traceback

import typer

from shared.errors import BrokerError, ConfigError, InvalidArgument, StreamlearnError


def report(exc: BaseException, verbose: bool) -> int | None:
    """Print `exc` as `error: ...` on stderr and return the exit code; None: not expected.

    With `verbose`, the cause chain (with tracebacks) comes first, so the last line is
    still the one that says what to do.
    """
    code = exit_code(exc)
    if code is None:
        return None
    if verbose:
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    typer.secho(f"error: {message(exc)}", err=True, fg=typer.colors.RED)
    return code


def exit_code(exc: BaseException) -> int | None:
    """2 for usage and configuration errors, 1 for other expected failures, None for bugs."""
    if isinstance(exc, ConfigError | InvalidArgument) or _is_validation_error(exc):
        return 2
    if isinstance(exc, StreamlearnError | OSError) or _is_kafka_error(exc):
        return 1
    return None


def message(exc: BaseException) -> str:
    """The line shown for `exc`."""
    if _is_validation_error(exc):
        # pydantic-settings: a STREAMLEARN_* (or service) variable has a wrong value.
        first = exc.errors()[0]  # type: ignore[attr-defined]
        where = ".".join(str(p) for p in first["loc"])
        return f"invalid setting {where}: {first['msg']} (check the environment variables)"
    if _is_kafka_error(exc):
        return f"Kafka: {_kafka_text(exc)} (`streamlearn kafka status`)"
    if isinstance(exc, OSError) and not isinstance(exc, StreamlearnError):
        return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, BrokerError):
        hint = "`streamlearn doctor` checks Java, Maven, ports and disk in one go"
        text += f"\n({hint})" if "\n" in text else f" ({hint})"
    return text


def _kafka_text(exc: BaseException) -> str:
    """A KafkaException's text: its KafkaError's, or whatever it was raised with."""
    from confluent_kafka import KafkaError

    first = exc.args[0] if exc.args else None
    return first.str() if isinstance(first, KafkaError) else str(exc) or type(exc).__name__


def _is_validation_error(exc: BaseException) -> bool:
    # Imported only when a command failed: pydantic is then loaded already.
    from pydantic import ValidationError

    return isinstance(exc, ValidationError)


def _is_kafka_error(exc: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return isinstance(exc, KafkaException)
