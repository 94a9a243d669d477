"""When to promote a candidate and when to roll production back, and the reason why."""

from __future__ import annotations

from dataclasses import dataclass

from services.registry.model import Version


@dataclass(frozen=True)
class Policy:
    """Compare versions by one prequential metric from their lineage.

    Attributes:
        metric: Lineage metric name, e.g. "logloss"; empty disables the policy.
        lower_is_better: True for losses, False for accuracy/AUC.
        min_improvement: How much better (absolute) a candidate must be to replace production.
        rollback_tolerance: Relative degradation of the live metric, against the metric the
            version was registered with, that triggers a rollback.

    """

    metric: str = ""
    lower_is_better: bool = True
    min_improvement: float = 0.0
    rollback_tolerance: float = 0.05

    @property
    def enabled(self) -> bool:
        """A policy without a metric does nothing."""
        return bool(self.metric)

    def promotion_reason(self, candidate: Version, production: Version | None) -> str | None:
        """Why the candidate should replace production, or None when it should not."""
        ours = candidate.lineage.metrics.get(self.metric)
        if ours is None or (production is not None and production.version == candidate.version):
            return None
        if production is None:
            return f"policy: first production version ({self.metric}={ours:.6g})"
        theirs = production.lineage.metrics.get(self.metric)
        if theirs is None:
            return f"policy: production v{production.version} has no {self.metric}"
        gain = (theirs - ours) if self.lower_is_better else (ours - theirs)
        if gain <= self.min_improvement:
            return None
        return (
            f"policy: candidate v{candidate.version} {self.metric}={ours:.6g} beats "
            f"production v{production.version} {theirs:.6g} by {gain:.6g} "
            f"(> {self.min_improvement:.6g})"
        )

    def rollback_reason(self, served: Version, live: float) -> str | None:
        """Why a served version's live metric calls for a rollback, or None."""
        registered = served.lineage.metrics.get(self.metric)
        if registered is None:
            return None
        allowed = abs(registered) * self.rollback_tolerance
        worse = live - registered if self.lower_is_better else registered - live
        if worse <= allowed:
            return None
        return (
            f"policy: live {self.metric}={live:.6g} of v{served.version} is worse than its "
            f"registered {registered:.6g} by {worse:.6g} (> {self.rollback_tolerance:.0%})"
        )
