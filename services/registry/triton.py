"""Export registered versions in NVIDIA Triton's model-repository layout.

    <out>/<model>/config.pbtxt
    <out>/<model>/<version>/model.onnx

The config names the ONNX Runtime backend and the exported versions; Triton completes the
inputs and outputs from the ONNX graph itself (its auto-complete is on by default).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from inference import model_config_pb2
from shared.clients.registry import RegistryClient


def export(
    client: RegistryClient, model: str, out: Path, versions: list[int], max_batch_size: int = 64
) -> list[Path]:
    """Download `versions` of `model` (verified) and write them with a config.pbtxt.

    Returns:
        The written model files.

    """
    model_dir = out / model
    written = []
    for number in versions:
        meta, data = client.download(model, number)
        target = model_dir / str(meta.version) / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    config = model_config_pb2.ModelConfig(
        name=model,
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        version_policy=model_config_pb2.ModelVersionPolicy(
            specific=model_config_pb2.ModelVersionPolicy.Specific(versions=sorted(versions))
        ),
    )
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return written
