from __future__ import annotations

import hashlib
from pathlib import Path

from services.registry.artifacts import LocalArtifactStore
from services.registry.model import Lineage, Version
from services.registry.policy import Policy
from services.registry.registry import Registry
from services.registry.store import Store


def version(number: int, logloss: float | None) -> Version:
    metrics = {} if logloss is None else {"logloss": logloss}
    return Version("m", number, "0" * 64, 1, "onnx", Lineage(metrics=metrics), {}, 0.0)


def test_promotion_needs_a_better_metric_by_the_margin() -> None:
    policy = Policy("logloss", lower_is_better=True, min_improvement=0.01)
    assert "first production" in (policy.promotion_reason(version(1, 0.5), None) or "")
    assert policy.promotion_reason(version(2, 0.495), version(1, 0.5)) is None  # below margin
    assert policy.promotion_reason(version(2, 0.6), version(1, 0.5)) is None
    reason = policy.promotion_reason(version(3, 0.3), version(1, 0.5))
    assert reason is not None and "v3 logloss=0.3 beats production v1 0.5" in reason
    assert policy.promotion_reason(version(3, None), version(1, 0.5)) is None
    assert policy.promotion_reason(version(1, 0.5), version(1, 0.5)) is None


def test_higher_is_better_metrics_compare_the_other_way() -> None:
    policy = Policy("accuracy", lower_is_better=False)
    assert policy.promotion_reason(
        Version("m", 2, "0" * 64, 1, "onnx", Lineage(metrics={"accuracy": 0.9}), {}, 0),
        Version("m", 1, "0" * 64, 1, "onnx", Lineage(metrics={"accuracy": 0.8}), {}, 0),
    )


def test_rollback_only_beyond_the_tolerance() -> None:
    policy = Policy("logloss", rollback_tolerance=0.1)
    assert policy.rollback_reason(version(3, 0.30), 0.32) is None  # within 10%
    reason = policy.rollback_reason(version(3, 0.30), 0.40)
    assert reason is not None and "live logloss=0.4" in reason


def test_registry_applies_the_policy_and_records_why(tmp_path: Path) -> None:
    reg = Registry(Store(tmp_path / "db"), LocalArtifactStore(tmp_path / "a"), Policy("logloss"))
    reg.create_model("m")
    for i, loss in enumerate((0.5, 0.6, 0.3), start=1):
        data = f"v{i}".encode()
        reg.register_version(
            "m",
            [data],
            hashlib.sha256(data).hexdigest(),
            len(data),
            lineage=Lineage(metrics={"logloss": loss}),
        )
        reg.set_alias("m", "candidate", i)
    assert reg.get_model("m").aliases["production"] == 3
    promotions = [h for h in reg.history("m") if h.action == "promote"]
    assert [(h.from_version, h.to_version, h.actor) for h in promotions] == [
        (1, 3, "policy"),
        (0, 1, "policy"),
    ]
    assert reg.report_live_metric("m", 3, 0.31) is None
    audit = reg.report_live_metric("m", 3, 0.9, reporter="monitor")
    assert audit is not None and (audit.from_version, audit.to_version) == (3, 1)
    assert audit.actor == "policy (reported by monitor)"  # a forced rollback names its caller
    assert "live logloss=0.9" in audit.reason
    assert reg.report_live_metric("m", 3, 0.9) is None  # v3 is no longer served
