"""`streamlearn doctor`: one line per check, with its fix.

Exit code 0 when every prerequisite passes and, if a system is up, every part of it answers;
1 otherwise. With nothing started, what would run is listed as not running without failing.
"""

from __future__ import annotations

import json

import typer

from streamlearn.cli.context import settings_of
from streamlearn.system.doctor import Check, run_checks


def doctor(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Check Python, the virtualenv, Java, Maven, the Kafka jars, ports, disk, what runs.

    Exit code 0 when every required check passes, 1 otherwise. Prerequisites are always
    required; the broker and the services only while a system is up (`streamlearn up`) or
    Kafka is external. With nothing started they show as `--` (not running), not as failures.
    """
    checks = run_checks(settings_of(ctx))
    if as_json:
        typer.echo(json.dumps([c.as_json() for c in checks], indent=1))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            typer.echo(_line(check, width))
    raise typer.Exit(0 if all(c.ok or not c.required for c in checks) else 1)


def _line(check: Check, width: int) -> str:
    if check.ok:
        mark = typer.style("ok  ", fg=typer.colors.GREEN)
    elif not check.required:
        mark = typer.style("--  ", fg=typer.colors.YELLOW)
    else:
        mark = typer.style("FAIL", fg=typer.colors.RED, bold=True)
    fix = f" -> {check.fix}" if check.fix and not check.ok else ""
    return f"{mark} {check.name:<{width}}  {check.detail}{fix}"
