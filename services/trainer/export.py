"""ONNX versions of a learning network: export the graph once, then only swap the weights.

The TorchScript exporter runs once, without constant folding, so every parameter and buffer
(the input layer's running statistics) keeps its own initializer. Each new version rewrites
those initializers from the live tensors (far cheaper than exporting again) and is checked
against torch on a probe batch with ONNX Runtime before it leaves the trainer. A network
with hashed ids takes them as a second input `sparse` (N, K) int64, K free.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from services.trainer.learner import Batch, Learner
from services.trainer.model import Serving
from shared.errors import IntegrityError
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session

SPARSE_INPUT = "sparse"


@contextlib.contextmanager
def _distinct(module: torch.nn.Module) -> Iterator[None]:
    """Give every parameter and buffer distinct values while the graph is exported.

    The exporter merges initializers of equal content (a fresh scaler's zero mean and M2,
    say) into one, which would leave no initializer to rewrite for the others.
    """
    tensors = [*module.parameters(), *module.buffers()]
    saved = [t.detach().clone() for t in tensors]
    with torch.no_grad():
        for i, tensor in enumerate(tensors):
            ramp = torch.arange(tensor.numel(), device=tensor.device).reshape(tensor.shape)
            tensor.copy_(1.0 + i + ramp.to(tensor.dtype) * 1e-3)
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved, strict=True):
                tensor.copy_(value)


class OnnxExporter:
    """Serialises the learner's current weights as an ONNX model, verified."""

    def __init__(self, learner: Learner, probe: Batch, tolerance: float = 1e-5) -> None:
        self._learner = learner
        self._serving = Serving(learner.network, learner.config.task).eval()
        self._probe = probe
        self._tolerance = tolerance
        self._graph = self._export_graph()
        tensors = dict(self._serving.named_parameters()) | dict(self._serving.named_buffers())
        self._mapped = {
            i.name: tensors[i.name] for i in self._graph.graph.initializer if i.name in tensors
        }
        if len(self._mapped) != len(tensors):
            missing = sorted(set(tensors) - set(self._mapped))
            raise IntegrityError(f"exported graph lost parameters or buffers {missing}")

    def export(self) -> bytes:
        """The current weights as ONNX bytes, after checking them against torch."""
        for initializer in self._graph.graph.initializer:
            parameter = self._mapped.get(initializer.name)
            if parameter is not None:
                array = parameter.detach().cpu().numpy()
                initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
        data = self._graph.SerializeToString()
        self._verify(data)
        return data

    def _inputs(self) -> tuple[torch.Tensor, ...]:
        device = self._learner.device
        features = self._probe.features.to(device)
        if not self._learner.uses_sparse:
            return (features,)
        sparse = self._probe.sparse
        if sparse is None:  # a probe without ids: every category missing
            sparse = torch.zeros(len(features), 1, dtype=torch.int64)
        return features, sparse.to(device)

    def _export_graph(self) -> onnx.ModelProto:
        names = [INPUT] + ([SPARSE_INPUT] if self._learner.uses_sparse else [])
        buffer = io.BytesIO()
        with warnings.catch_warnings(), _distinct(self._serving):
            # The TorchScript exporter is deprecated but exports in milliseconds, and it runs
            # once per trainer: versions after the first only rewrite initializers.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._export(names, buffer)
        return onnx.load_from_string(buffer.getvalue())

    def _export(self, names: list[str], buffer: io.BytesIO) -> None:
        torch.onnx.export(
            self._serving,
            self._inputs(),
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            dynamo=False,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes={n: {0: "batch"} for n in [*names, OUTPUT]}
            | ({SPARSE_INPUT: {0: "batch", 1: "slots"}} if SPARSE_INPUT in names else {}),
            do_constant_folding=False,
            opset_version=17,
        )

    def _verify(self, data: bytes) -> None:
        session = make_session(data, "cpu")
        feeds = {INPUT: self._probe.features.numpy()}
        if self._learner.uses_sparse:
            feeds[SPARSE_INPUT] = self._inputs()[1].cpu().numpy()
        served = session.run([OUTPUT], feeds)[0]
        with torch.no_grad():
            expected = self._serving(*self._inputs()).cpu().numpy()
        if not np.allclose(served, expected, atol=self._tolerance, rtol=self._tolerance):
            worst = float(np.abs(served - expected).max())
            raise IntegrityError(f"ONNX export differs from torch by {worst:.3g} on the probe")
