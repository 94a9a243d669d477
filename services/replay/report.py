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
    """One line per run/version: `metric` against events seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9, 5))
    for name, points in curves.items():
        xs = [p["events"] for p in points if metric in p]
        ys = [p[metric] for p in points if metric in p]
        axes.plot(xs, ys, label=name, linewidth=1.2)
    axes.set_xlabel("events")
    axes.set_ylabel(f"prequential {metric}")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) <= 12:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
