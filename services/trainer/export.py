"""ONNX versions of a learning network: export the graph once, then only swap the weights.

The TorchScript exporter runs once, without constant folding, so every parameter keeps its
own initializer. Each new version rewrites those initializers from the live parameters (far
cheaper than exporting again) and is checked against torch on a probe batch with ONNX
Runtime before it leaves the trainer.
"""

from __future__ import annotations

import io
import warnings

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


class OnnxExporter:
    """Serialises the learner's current weights as an ONNX model, verified."""

    def __init__(self, learner: Learner, probe: Batch, tolerance: float = 1e-5) -> None:
        self._learner = learner
        self._serving = Serving(learner.network, learner.config.task).eval()
        self._probe = probe
        self._tolerance = tolerance
        self._graph = self._export_graph()
        params = dict(self._serving.named_parameters())
        self._mapped = {
            i.name: params[i.name] for i in self._graph.graph.initializer if i.name in params
        }
        if len(self._mapped) != len(params):
            missing = sorted(set(params) - set(self._mapped))
            raise IntegrityError(f"exported graph lost parameters {missing}")

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
        assert self._probe.sparse is not None, "an embedding-bag probe needs sparse ids"
        return features, self._probe.sparse.to(device)

    def _export_graph(self) -> onnx.ModelProto:
        names = [INPUT] + ([SPARSE_INPUT] if self._learner.uses_sparse else [])
        buffer = io.BytesIO()
        with warnings.catch_warnings():
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
            dynamic_axes={n: {0: "batch"} for n in [*names, OUTPUT]},
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
