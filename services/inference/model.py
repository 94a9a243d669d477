"""A loaded model version: one ONNX Runtime session, its tensor specs, input checks, warm-up."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.inference.datatypes import numpy_dtype, v2_name
from services.inference.named import NamedInputs
from services.inference.text import LOGPROBS, TextGraph, run_logprobs
from shared.errors import (
    InferenceFailed,
    IntegrityError,
    InvalidArgument,
    StreamlearnError,
    Unavailable,
)
from shared.ort import Device, make_session
from streamlearn.v1 import stream_pb2

# ONNX Runtime's error types that mean "these bytes are no servable model" (by name: they
# live in a private pybind module).
_BAD_MODEL = frozenset(
    {"InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NotImplemented", "NoModel"}
)
# Those that mean "not now": memory, the device or an execution provider failed.
_NOT_NOW = frozenset({"RuntimeException", "EPFail", "EngineError", "DeviceReset"})


def session_error(name: str, version: int, exc: Exception, onnx_bytes: bytes) -> StreamlearnError:
    """The domain error for a session that could not be created from a version's bytes."""
    kind = type(exc).__name__
    if kind in _BAD_MODEL or (kind == "Fail" and _malformed(onnx_bytes)):
        return InvalidArgument(f"{name} v{version} is not a loadable ONNX model: {exc}")
    if kind in _NOT_NOW or isinstance(exc, MemoryError):
        return Unavailable(f"{name} v{version} could not be loaded now: {kind}: {exc}")
    return StreamlearnError(f"{name} v{version}: ONNX Runtime failed to open it: {kind}: {exc}")


def _malformed(onnx_bytes: bytes) -> bool:
    """Whether the ONNX checker refuses the bytes.

    ORT reports many defects of a model (a truncated file that lost its opset import, a
    graph that fails shape inference) as its generic `Fail`, with texts that change between
    releases; the checker tells a bad model from a runtime failure without reading them.
    """
    import onnx  # only on this error path: the checker is not needed to serve

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    except Exception:  # any refusal (DecodeError, ValidationError, ...) means malformed
        return True
    return False


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: V2 datatype and shape, -1 for a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """E.g. `x FP32 [-1, 32]`."""
        return f"{self.name} {self.datatype} {list(self.shape)}"


def _spec(node: object) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)  # type: ignore[attr-defined]
    return TensorSpec(node.name, v2_name(node.type), shape)  # type: ignore[attr-defined]


class LoadedModel:
    """An immutable, warmed-up version; requests hold a reference, so a swap never cuts them."""

    def __init__(
        self,
        name: str,
        version: int,
        onnx_bytes: bytes,
        sha256: str = "",
        device: Device = "auto",
        threads: int = 1,
        definition: stream_pb2.StreamDefinition | None = None,
    ) -> None:
        """Verify the bytes and open a session on them.

        `definition` is the stream definition the version was trained with (its lineage):
        with a feature schema, the version also takes named inputs (see `named`). A graph
        of a byte-level language model (`text`) takes texts instead (see `text`).

        Raises:
            IntegrityError: The bytes do not hash to `sha256`.
            InvalidArgument: The bytes are not a model ONNX Runtime can decode and serve,
                or a language model's graph without a valid context.
            Unavailable: The runtime could not open it now (memory, device, provider).
            StreamlearnError: Another runtime failure (a client would see INTERNAL).

        """
        if sha256 and hashlib.sha256(onnx_bytes).hexdigest() != sha256:
            raise IntegrityError(f"{name} v{version}: artifact does not match its sha256")
        self.name = name
        self.version = version
        self.version_text = str(version)  # as responses carry it
        try:
            self.session = make_session(onnx_bytes, device, threads)
        except Exception as exc:  # ORT's own error types, said in our terms
            raise session_error(name, version, exc, onnx_bytes) from exc
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self._inputs = {s.name: s for s in self.inputs}
        self.output_names = [s.name for s in self.outputs]
        signature = {s.name: (s.datatype, s.shape) for s in self.inputs}
        self.text = TextGraph.detect(
            f"{name} v{version}",
            signature,
            {s.name: (s.datatype, s.shape) for s in self.outputs},
            self._properties(),
        )
        # A language model's stream has texts, not features: it takes no named inputs.
        self.named = (
            None
            if self.text is not None
            else NamedInputs.for_version(name, version, definition, signature)
        )

    def _properties(self) -> dict[str, str]:
        """The model's metadata properties (ONNX `metadata_props`)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on."""
        return list(self.session.get_providers())

    def has_input(self, name: str) -> bool:
        """True when the graph has an input called `name`."""
        return name in self._inputs

    def input_spec(self, name: str) -> TensorSpec:
        """The spec of an input; InvalidArgument naming the expected inputs otherwise."""
        spec = self._inputs.get(name)
        if spec is None:
            raise InvalidArgument(
                f"{self.name} has no input {name!r}; expected inputs: "
                f"{', '.join(s.describe() for s in self.inputs)}"
            )
        return spec

    def check(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> None:
        """Reject anything the session would refuse, with what was expected."""
        for name, array in feeds.items():
            spec = self.input_spec(name)
            fits = len(array.shape) == len(spec.shape) and all(
                want in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
            )
            if not fits:
                raise InvalidArgument(
                    f"{self.name}: input {name!r} has shape {list(array.shape)}"
                    f"; expected {list(spec.shape)}"
                )
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InvalidArgument(
                f"{self.name}: missing input(s) {missing}; expected "
                f"{', '.join(s.describe() for s in self.inputs)}"
            )
        unknown = [o for o in outputs if o not in self.output_names]
        if unknown:
            raise InvalidArgument(
                f"{self.name}: unknown output(s) {unknown}; outputs: {self.output_names}"
            )

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run the session; all outputs when none are named.

        Raises:
            InferenceFailed: ONNX Runtime refused or failed on inputs that passed `check`.

        """
        names = list(outputs) or self.output_names
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:  # ORT raises its own types, none of them ours
            raise InferenceFailed(f"{self.name} v{self.version}: runtime error: {exc}") from exc
        return dict(zip(names, values, strict=True))

    def warm_up(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Run a zero batch once, so the first real request pays no lazy initialisation.

        A language model runs one window of its full context: a graph whose context
        claim exceeds what it can take (its learned positions) fails here, before serving.
        """
        if self.text is not None:
            return {LOGPROBS: run_logprobs(self, self.text.warm_up_ids())}
        feeds = {
            s.name: np.zeros(
                tuple(batch if d == -1 else d for d in s.shape), numpy_dtype(s.datatype)
            )
            for s in self.inputs
        }
        return self.run(feeds)
