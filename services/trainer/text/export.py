"""ONNX versions of a byte language model: export the graph once, then only swap weights.

As `services.trainer.export` does for tabular models: the TorchScript exporter runs once
without constant folding (every parameter keeps its own initializer), each version rewrites
the initializers from the live tensors and is checked against torch on a probe batch with
ONNX Runtime before it leaves the trainer.

The graph takes `text`, uint8 byte ids (batch, seq), and gives `logprobs`, float32
natural-log next-byte probabilities (batch, seq, 256); batch and seq are free, seq at most
the context (recorded in the metadata as `streamlearn.text.context`). uint8 rather than
int64: every value of the type is a valid byte, so no input can index past the embedding,
the tensor is 8x smaller on the wire, and a KServe BYTES input maps onto it without a copy
(`np.frombuffer(raw, np.uint8)`). Pad a batch of shorter texts on the right: causal
attention keeps every real position independent of the padding after it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from services.trainer.export import _distinct
from services.trainer.text.config import VOCAB
from services.trainer.text.learner import TextLearner
from services.trainer.text.model import TextServing
from shared.errors import IntegrityError, InvalidArgument
from shared.ort import make_session
from shared.serving import CLASS_LOGPROBS_OUTPUT, LOGPROBS_OUTPUT, TEXT_CONTEXT_KEY, TEXT_INPUT

__all__ = ["CONTEXT_KEY", "LOGPROBS_OUTPUT", "TEXT_INPUT", "TextOnnxExporter", "check_ids"]

CONTEXT_KEY = TEXT_CONTEXT_KEY
OPSET = 17  # as services/trainer/export.py


def default_probe(context: int) -> np.ndarray:
    """A fixed (2, min(context, 16)) uint8 batch that touches low, middle and high bytes."""
    length = min(context, 16)
    ramp = (np.arange(2 * length, dtype=np.int64) * 37 + 11) % VOCAB
    return ramp.astype(np.uint8).reshape(2, length)


def check_ids(ids: np.ndarray, context: int) -> None:
    """InvalidArgument unless `ids` is a (batch, seq) uint8 array with 1 <= seq <= context."""
    if not isinstance(ids, np.ndarray) or ids.dtype != np.uint8 or ids.ndim != 2:
        raise InvalidArgument("text ids must be a 2-D uint8 array (batch, seq)")
    if not 1 <= ids.shape[1] <= context or ids.shape[0] < 1:
        raise InvalidArgument(
            f"text ids of shape {ids.shape}: need batch >= 1 and 1 <= seq <= {context}"
        )


class TextOnnxExporter:
    """Serialises the learner's current weights as an ONNX model, verified against torch."""

    def __init__(
        self, learner: TextLearner, probe: np.ndarray | None = None, tolerance: float = 1e-4
    ) -> None:
        self._learner = learner
        self._probe = default_probe(learner.config.context) if probe is None else probe
        check_ids(self._probe, learner.config.context)
        self._tolerance = tolerance
        self._graph = self._export_graph()
        tensors = dict(self._serving().named_parameters())
        names = {i.name for i in self._graph.graph.initializer}
        if not set(tensors) <= names:
            missing = sorted(set(tensors) - names)
            raise IntegrityError(f"exported graph lost parameters {missing}")

    def _serving(self) -> TextServing:
        # the learner's network object changes on restore: always serve the current one
        return TextServing(self._learner.network).eval()

    def export(self) -> bytes:
        """The current weights as ONNX bytes, after checking them against torch."""
        tensors = dict(self._serving().named_parameters())
        for initializer in self._graph.graph.initializer:
            parameter = tensors.get(initializer.name)
            if parameter is not None:
                array = parameter.detach().cpu().numpy()
                initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
        data = self._graph.SerializeToString()
        self._verify(data)
        return data

    def _export_graph(self) -> onnx.ModelProto:
        serving = self._serving()
        probe = torch.from_numpy(self._probe).to(self._learner.device)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), _distinct(serving), torch.no_grad():
            # The TorchScript exporter is deprecated but fast, and it runs once per trainer.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                serving,
                (probe,),
                buffer,  # type: ignore[arg-type]  # file-like objects are accepted
                dynamo=False,
                input_names=[TEXT_INPUT],
                output_names=self._outputs(),
                dynamic_axes={
                    name: {0: "batch", 1: "seq"} for name in [TEXT_INPUT, *self._outputs()]
                },
                do_constant_folding=False,
                opset_version=OPSET,
            )
        graph = onnx.load_from_string(buffer.getvalue())  # (its outputs: `_outputs()`)
        onnx.helper.set_model_props(graph, {CONTEXT_KEY: str(self._learner.config.context)})
        return graph

    def _outputs(self) -> list[str]:
        """The graph's outputs: next-byte log-probabilities, and the classes if it has them."""
        if self._learner.network.classifier is None:
            return [LOGPROBS_OUTPUT]
        return [LOGPROBS_OUTPUT, CLASS_LOGPROBS_OUTPUT]

    @torch.no_grad()
    def _expected(self) -> list[np.ndarray]:
        """What torch gives on the probe, one array per output."""
        probe = torch.from_numpy(self._probe).to(self._learner.device)
        out = self._serving()(probe)
        tensors = out if isinstance(out, tuple) else (out,)
        return [t.cpu().numpy() for t in tensors]

    def _verify(self, data: bytes) -> None:
        served = make_session(data, "cpu").run(self._outputs(), {TEXT_INPUT: self._probe})
        for name, got, expected in zip(self._outputs(), served, self._expected(), strict=True):
            worst = float(np.abs(got - expected).max())
            if not worst <= self._tolerance:  # NaN fails too
                raise IntegrityError(
                    f"ONNX export of {name} differs from torch by {worst:.3g} on the probe"
                )
