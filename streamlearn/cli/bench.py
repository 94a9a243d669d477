"""`streamlearn bench NAME [--json]` and `streamlearn bench --all`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from bench.catalog import BENCHMARKS, NAMES, WITHOUT_KAFKA
from bench.core import BenchContext, Figure
from shared.errors import InvalidArgument
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli


def bench(
    ctx: typer.Context,
    name: str = typer.Argument("", help=f"One of: {', '.join(NAMES)}"),
    run_all: bool = typer.Option(False, "--all", help="Run every benchmark."),
    as_json: bool = typer.Option(False, "--json", help="Print figures as JSON."),
    scale: float = typer.Option(1.0, help="Multiply event counts (0.1 for a quick run)."),
) -> None:
    """Measure a part of streamlearn beside its baseline, in the same run, as ratios."""
    names = list(NAMES) if run_all else [name]
    unknown = [n for n in names if n not in NAMES]  # by name: nothing is imported yet
    if unknown or not names or names == [""]:
        raise InvalidArgument(
            f"unknown benchmark {unknown or [name]}; choose from {list(NAMES)} or --all"
        )
    settings = settings_of(ctx)
    # `bench cli` measures start-up only: no broker is started for it.
    kafka = settings.kafka() if WITHOUT_KAFKA.issuperset(names) else kafka_for_cli(settings)
    context = BenchContext(kafka=kafka, scale=scale)
    results = {n: BENCHMARKS[n](context) for n in names}
    if as_json:
        typer.echo(
            json.dumps({n: [f.as_json() for f in figs] for n, figs in results.items()}, indent=2)
        )
    else:
        Console().print(_table(results))


def _table(results: dict[str, list[Figure]]) -> Table:
    table = Table(title="streamlearn benchmarks (ratio > 1: better than the baseline)")
    for column in ("benchmark", "figure", "value", "baseline", "baseline value", "ratio"):
        table.add_column(
            column, justify="right" if "value" in column or column == "ratio" else "left"
        )
    for name, figures in results.items():
        for f in figures:
            table.add_row(
                name,
                f.name,
                f"{_number(f.value)} {f.unit}",
                f.baseline,
                f"{_number(f.baseline_value)} {f.unit}",
                f"{f.ratio:.2f}x",
            )
    return table


def _number(value: float) -> str:
    """Thousands separators for big figures, three significant digits for small ones."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
