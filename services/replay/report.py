"""Replay reports: a JSON document and a PNG of the learning curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True))


def plot(path: Path, curves: dict[str, list[dict[str, float]]], metric: str, title: str) -> None:
    """One line per run/version: `metric` against events seen.

    A `metric` that names a family (`domain_bits_per_byte` for `domain_bits_per_byte.<d>`)
    draws one line per member and run: each domain's held-out score, say.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9, 5))
    for name, points in curves.items():
        for key, label in _lines(points, metric, name):
            xs = [p["events"] for p in points if key in p]
            ys = [p[key] for p in points if key in p]
            axes.plot(xs, ys, label=label, linewidth=1.2)
    axes.set_xlabel("events")
    axes.set_ylabel(f"prequential {metric}")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(axes.get_lines()) <= 12:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _lines(points: list[dict[str, float]], metric: str, name: str) -> list[tuple[str, str]]:
    """(key, label) of the lines of `metric` in one run's points."""
    if any(metric in p for p in points):
        return [(metric, name)]
    prefix = metric + "."
    members = sorted({k for p in points for k in p if k.startswith(prefix)})
    return [(key, f"{name}: {key[len(prefix) :]}") for key in members]
