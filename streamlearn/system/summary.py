"""What the demo shows: the live dashboard and the closing summary (rich renderables)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.table import Table

from streamlearn.system.feed import Feed, FeedbackFeed
from streamlearn.system.status import drift_fields, drift_text
from streamlearn.system.watch import Joins, Served, Snapshot
from streamlearn.v1 import metrics_pb2

BARS = "▁▂▃▄▅▆▇█"


@dataclass
class DemoResult:
    """The demo's settings and what it saw."""

    duration_s: float
    drift_after_s: float  # when the concept flips, at the nominal rate
    elapsed_s: float = 0.0
    # Whether the model continues an earlier run ("continuing `demo` from v171, ..."): the
    # trainer's counts include what it learned before this run.
    start: str = ""
    delivered: int = 0
    latest_version: int = 0
    trainer: metrics_pb2.TrainerMetrics = field(default_factory=metrics_pb2.TrainerMetrics)
    history: list[Served] = field(default_factory=list)
    joins: Joins | None = None  # demo --feedback: what the joiner made of the traffic


def sparkline(values: list[float], width: int = 60) -> str:
    """Values in [0, 1] as a bar line of the last `width` points."""
    tail = values[-width:]
    return "".join(BARS[min(len(BARS) - 1, int(v * len(BARS)))] for v in tail)


def dashboard(
    snapshot: Snapshot, feed: Feed | FeedbackFeed, started: float, result: DemoResult
) -> Table:
    """One refresh of the live view."""
    elapsed = time.monotonic() - started
    trainer = snapshot.trainer
    table = Table(
        title=f"streamlearn demo — {elapsed:.0f}s of {result.duration_s:.0f}s "
        f"(the concept flips at {result.drift_after_s:.0f}s; Ctrl-C ends it)",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column()
    concept = "flipped" if feed.drifted else "original"
    if result.start:
        table.add_row("model", result.start)
    rate = f"{feed.sent / max(elapsed, 1e-9):,.0f}/s"
    if isinstance(feed, FeedbackFeed):
        table.add_row("served", f"{feed.sent:,} predictions ({rate}), {feed.clicks:,} clicks")
    else:
        table.add_row("produced", f"{feed.sent:,} samples ({rate})")
    if snapshot.joins is not None:
        table.add_row("joined", join_text(snapshot.joins))
        table.add_row("label delay", delay_text(snapshot.joins))
    table.add_row(
        "trained",
        f"{trainer.events_applied:,} events ({snapshot.trained_per_s:,.0f}/s, "
        f"skipped {trainer.events_skipped:,})",
    )
    table.add_row("prequential", _metrics(trainer))
    if served_metrics(trainer) is not None:
        table.add_row("as served", served_metrics(trainer))
    table.add_row("drift", trainer_drift(trainer))
    served = snapshot.served
    table.add_row(
        "versions",
        f"registered up to v{snapshot.latest_version}, served v{served.version if served else '-'}",
    )
    table.add_row(
        "served model",
        f"accuracy {served.accuracy:.3f} on held-out events of the {concept} concept"
        if served
        else "waiting for the first version",
    )
    table.add_row("accuracy", sparkline([s.accuracy for s in snapshot.history]))
    return table


def summary(result: DemoResult) -> Table:
    """The closing table: volumes, versions and how the served model fared around the drift."""
    table = Table(title="streamlearn demo: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rate = result.delivered / max(result.elapsed_s, 1e-9)
    what = "predictions served" if result.joins is not None else "samples delivered"
    table.add_row(what, f"{result.delivered:,} in {result.elapsed_s:.0f}s ({rate:,.0f}/s)")
    if result.joins is not None:
        table.add_row("joined", join_text(result.joins))
        table.add_row("label delay", delay_text(result.joins))
    if result.start:
        table.add_row("model", result.start)
    table.add_row("events trained", f"{result.trainer.events_applied:,}")
    table.add_row("prequential (last window)", _metrics(result.trainer))
    if served_metrics(result.trainer) is not None:
        table.add_row("as served (last window)", served_metrics(result.trainer))
    table.add_row("drift", trainer_drift(result.trainer))
    history = result.history
    if not history:
        table.add_row("served", "[red]no version was ever served[/]")
        return table
    versions = sorted({s.version for s in history})
    table.add_row("versions", f"{result.latest_version} registered; {len(versions)} served")
    first, last = history[0], history[-1]
    table.add_row(
        "first served", f"v{first.version} at {first.at:.1f}s: accuracy {first.accuracy:.3f}"
    )
    before = [s for s in history if s.at < result.drift_after_s]
    after = [s for s in history if s.at >= result.drift_after_s]
    if before:
        best = max(s.accuracy for s in before)
        table.add_row("before the drift", f"best accuracy {best:.3f}")
        if after:
            worst = min(after, key=lambda s: s.accuracy)
            table.add_row("right after it", f"accuracy fell to {worst.accuracy:.3f}")
            back = next((s for s in after if s.at > worst.at and s.accuracy >= 0.9 * best), None)
            table.add_row(
                "recovered",
                f"to {back.accuracy:.3f} in {back.at - result.drift_after_s:.1f}s (v{back.version})"
                if back
                else "not within the run",
            )
    table.add_row("last served", f"v{last.version}: accuracy {last.accuracy:.3f}")
    return table


def join_text(joins: Joins) -> str:
    """Joined samples and negatives, the join rate, and labels that came to nothing."""
    rate = joins.join_rate
    text = f"{joins.joined:,} joined, {joins.negatives:,} negatives"
    text += f" (join rate {rate:.1%})" if rate is not None else " (none closed yet)"
    return text + f"; late {joins.late:,}, unknown {joins.unknown:,}, expired {joins.expired:,}"


def delay_text(joins: Joins) -> str:
    """The label delay of the recent joined samples."""
    mean = joins.mean_delay_s
    if mean is None:
        return "-"
    recent = joins.recent_delays_ms
    return f"mean {mean:.2f}s, max {max(recent) / 1000:.2f}s (last {len(recent):,} joined)"


def _metrics(trainer: metrics_pb2.TrainerMetrics, prefix: str = "") -> str:
    shown = ("logloss", "accuracy", "auc")
    found = [
        f"{name} {trainer.metrics[prefix + name]:.3f}"
        for name in shown
        if prefix + name in trainer.metrics
    ]
    return ", ".join(found) or "-"


def served_metrics(trainer: metrics_pb2.TrainerMetrics) -> str | None:
    """The served predictions' scores on their joined labels (None: no joined samples yet).

    The prequential row judges the trainer's current weights; this one the versions that
    answered, at the time they answered.
    """
    if "served_events" not in trainer.metrics:
        return None
    events = int(trainer.metrics["served_events"])
    return f"{_metrics(trainer, 'served_')} ({events:,} joined predictions)"


def trainer_drift(trainer: metrics_pb2.TrainerMetrics) -> str:
    """Drifts the trainer detected (and at which event) and diverging events it skipped."""
    return drift_text(drift_fields(trainer.metrics)) or "none detected"
