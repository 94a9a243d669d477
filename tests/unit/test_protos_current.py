"""The committed generated code must be what protoc produces from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_samples_roundtrip_with_every_label_kind() -> None:
    from streamlearn.v1 import sample_pb2

    for label in (
        {"regression": 1.5},
        {"class_index": 2},
        {"multi_label": sample_pb2.MultiLabel(classes=[0, 3])},
    ):
        sample = sample_pb2.Sample(
            schema_version=1, event_id="e", key="k", stream="s", dense=[0.5, 1.0], **label
        )  # type: ignore[arg-type]
        parsed = sample_pb2.Sample.FromString(sample.SerializeToString())
        assert parsed == sample
        assert parsed.WhichOneof("label") == next(iter(label))
