"""The KServe V2 / Triton GRPCInferenceService over the engine: protobuf only at this edge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import grpc

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc, model_config_pb2
from services.inference import stats, text, text_requests
from services.inference.datatypes import V2_TO_CONFIG
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.prediction_log import EVENT_ID, PredictionLog
from services.inference.tensors import decode_inputs, encode_response, requested_outputs
from services.inference.text_requests import TextLimits
from shared.errors import InvalidArgument, ResourceExhausted, StreamlearnError
from shared.grpc.status import abort_with, domain_errors, status_code_for
from shared.serving import CURRENT_REASON

log = logging.getLogger(__name__)

SERVER_NAME = "streamlearn"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
# ModelConfig parameter: the feature schema of a version with named inputs (JSON).
FEATURE_SCHEMA = "feature_schema"


def _version(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidArgument(f"model version must be a number, got {text!r}")
    return int(text)


def _log_prediction(
    plog: PredictionLog,
    request_id: str,
    response: pb.ModelInferResponse,
    model: LoadedModel,
    feeds: dict[str, Any],
    results: dict[str, Any],
) -> None:
    """Hand an answered request to the prediction log; the client learns its event id."""
    try:
        event_id = plog.event_id(request_id)
        plog.submit(event_id, model.name, model.version, feeds, results)
        response.parameters[EVENT_ID].string_param = event_id
    except Exception:  # logging must never fail the request it logs
        log.exception("prediction not logged", extra={"model": model.name})


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers tritonclient, perf_analyzer and any KServe V2 gRPC client."""

    def __init__(
        self,
        engine: Engine,
        max_request_bytes: int,
        prediction_log: PredictionLog | None = None,
        text_limits: TextLimits | None = None,
    ) -> None:
        """Serve `engine`'s models.

        `text_limits` bounds requests to language models (default: `TextLimits()` with
        `max_response_bytes` set to `max_request_bytes`, the server's message bound).
        """
        self._engine = engine
        self._max_request_bytes = max_request_bytes
        self._prediction_log = prediction_log
        self._text_limits = text_limits or TextLimits(max_response_bytes=max_request_bytes)
        self.counters = {m.name: stats.ModelCounters() for m in engine.repository.all()}
        self._metrics = {name: stats.RequestMetrics(name, True) for name in self.counters}
        self._unknown = stats.RequestMetrics("unknown", False)

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        """The process answers."""
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        """Every served model has a version loaded."""
        return pb.ServerReadyResponse(ready=self._engine.repository.ready())

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        """Name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME,
            version=SERVER_VERSION,
            extensions=["model_configuration", "statistics"],
        )

    def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        """True when the model (or that version) can serve now."""
        try:
            self._engine.resolve(request.name, _version(request.version))
        except StreamlearnError as exc:
            if status_code_for(exc) == grpc.StatusCode.NOT_FOUND and not request.version:
                abort_with(context, exc)  # an unknown model is an error, not "not ready"
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @domain_errors
    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        """Versions loaded and tensor signatures.

        A version with named inputs lists them after the model's own inputs: each field
        (FP32 for numeric ones, BYTES for categorical ones) and `records`; any of them may
        replace the model's inputs in a request (see `services.inference.named`). A
        language model lists what travels: `text` BYTES in; `logprobs`, `lengths` and
        `generated` out (see `services.inference.text_requests`).
        """
        model = self._engine.resolve(request.name, _version(request.version))
        served = self._engine.repository.model(request.name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        named = model.named.tensors() if model.named else []
        inputs: list[Any] = list(text.WIRE_INPUTS if model.text else [*model.inputs, *named])
        outputs: list[Any] = list(text.wire_outputs(model.text) if model.text else model.outputs)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in served.versions()],
            platform=PLATFORM,
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in outputs],
        )

    @domain_errors
    def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:  # noqa: N802
        """A Triton model config: batch dimension implicit, dynamic batching as configured."""
        model = self._engine.resolve(request.name, _version(request.version))
        return pb.ModelConfigResponse(config=self._config(model))

    @domain_errors
    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        """One inference (a generation answers its whole continuation at once).

        The same steps as `_answers`, without a generator for the tabular request, the
        serving hot path: every Python call on it costs a few times its in-process price
        in a server whose threads share two cores with their clients.
        """
        started = time.perf_counter_ns()
        ok, rows = False, 0
        try:
            model, pinned = self._resolve(request)
            if model.text is None:
                response, rows = self._tabular(request, model, pinned)
            else:
                response, rows = _only(self._text(request, model, False, _waiting(context)))
            ok = True
            return response
        finally:
            self._record(request.model_name, ok, time.perf_counter_ns() - started, rows)

    def ModelStreamInfer(  # noqa: N802
        self,
        request_iterator: Any,
        context: Any,
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Bidirectional stream: one response per request; errors in `error_message`.

        A generation request is answered with one response per `chunk_bytes` piece of its
        continuation as it is chosen, the last with `final`; an error part-way through is
        the request's last response. As in Triton, a failed request never ends the
        stream: the next request is answered.
        """
        for request in request_iterator:
            try:
                for response in self._answers(request, stream=True, active=_waiting(context)):
                    yield pb.ModelStreamInferResponse(infer_response=response)
            except StreamlearnError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))
            except Exception as exc:  # a bug must not cost the client its other requests
                log.exception("stream request failed", extra={"model": request.model_name})
                yield pb.ModelStreamInferResponse(error_message=f"internal error: {exc}")

    def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:  # noqa: N802
        """Success/failure counts and durations per model."""
        names = [request.name] if request.name else list(self.counters)
        reply = pb.ModelStatisticsResponse()
        for name in names:
            if name not in self.counters:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
            counters = self.counters[name]
            served = self._engine.repository.model(name)
            with counters.lock:
                reply.model_stats.add(
                    name=name,
                    version=str(served.current.version if served.current else ""),
                    last_inference=counters.last_inference_ms,
                    inference_count=counters.inference_count,
                    execution_count=counters.success_count,
                    inference_stats=pb.InferStatistics(
                        success=pb.StatisticDuration(
                            count=counters.success_count, ns=counters.success_ns
                        ),
                        fail=pb.StatisticDuration(count=counters.fail_count, ns=counters.fail_ns),
                    ),
                )
        return reply

    def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:  # noqa: N802
        """Every served model and its loaded versions."""
        reply = pb.RepositoryIndexResponse()
        for served in self._engine.repository.all():
            current = served.current.version if served.current else 0
            for version in served.versions() or [0]:
                state = "READY" if version else "UNAVAILABLE"
                # Triton's free-text reason says which loaded version answers unversioned calls.
                reason = CURRENT_REASON if version and version == current else ""
                reply.models.add(
                    name=served.name, version=str(version or ""), state=state, reason=reason
                )
        return reply

    def _answers(
        self, request: Any, stream: bool, active: Callable[[], bool] = lambda: True
    ) -> Iterator[pb.ModelInferResponse]:
        """The responses to one request (several for a generation on a stream), counted.

        `active`: whether the caller still waits (a generation stops when it does not).
        """
        started = time.perf_counter_ns()
        ok, rows = False, 0
        try:
            model, pinned = self._resolve(request)
            if model.text is not None:
                rows = yield from self._text(request, model, stream, active)
            else:
                response, rows = self._tabular(request, model, pinned)
                yield response
            ok = True
        finally:
            self._record(request.model_name, ok, time.perf_counter_ns() - started, rows)

    def _resolve(self, request: Any) -> tuple[LoadedModel, bool]:
        """The version a request runs on, and whether it named one (pinned).

        Raises:
            ResourceExhausted: The request is larger than the server's bound.
            InvalidArgument: The version is not a number.
            NotFound: No such model or loaded version.

        """
        size = request.ByteSize()
        if size > self._max_request_bytes:
            raise ResourceExhausted(
                f"request of {size} bytes exceeds the {self._max_request_bytes}-byte limit"
            )
        version = _version(request.model_version)
        return self._engine.resolve(request.model_name, version), version != 0

    def _tabular(
        self, request: Any, model: LoadedModel, pinned: bool
    ) -> tuple[pb.ModelInferResponse, int]:
        """A tabular model's response and the rows it scored."""
        text_requests.refuse_text_parameters(request, model)
        feeds = decode_inputs(request, model, self._engine.max_batch)
        ran_on, results = self._engine.infer(model, feeds, requested_outputs(request), pinned)
        rows = next(iter(feeds.values())).shape[0] if feeds else 0  # checked: rank >= 1
        response = encode_response(request, ran_on, results)
        plog = self._prediction_log
        if plog is not None and plog.logs(ran_on.name):
            _log_prediction(plog, request.id, response, ran_on, feeds, results)
        return response, rows

    def _text(
        self, request: Any, model: LoadedModel, stream: bool, active: Callable[[], bool]
    ) -> Generator[pb.ModelInferResponse, None, int]:
        """A language model's response(s); returns the texts it took.

        Texts run inline, on the version resolved: the batcher coalesces same-shaped
        tensors, which texts of different lengths are not. Predictions of language models
        are not logged (the prediction log's rows are feature vectors).
        """
        asked = text_requests.decode(request, model, self._text_limits, self._engine.max_batch)
        generation = asked.generation
        if generation is None:
            arrays = {text.LENGTHS: text.lengths_of(asked.texts)}
            if text.LOGPROBS in asked.outputs or text.CLASSES in asked.outputs:
                classes = text.CLASSES in asked.outputs
                arrays |= text.score(model, asked.texts, classes=classes)
            yield text_requests.score_response(request, model, asked.outputs, arrays)
            return len(asked.texts)
        chosen = text.generate(model, asked.texts[0], generation.max_new, generation.decoding)
        chosen = text.while_active(chosen, active)
        size = generation.chunk_bytes if stream else generation.max_new
        for piece, final in text.chunked(chosen, generation.max_new, size):
            yield text_requests.generated_response(request, model, piece, final)
        return 1

    def _record(self, name: str, ok: bool, elapsed_ns: int, rows: int) -> None:
        counters = self.counters.get(name)
        metrics = self._metrics.get(name, self._unknown)
        if counters is not None:
            counters.record(ok, elapsed_ns, rows)
        if metrics.latency is not None:
            metrics.latency.observe(elapsed_ns / 1e9)
        (metrics.ok if ok else metrics.error).inc()

    def _config(self, model: LoadedModel) -> model_config_pb2.ModelConfig:
        if model.text is not None:
            return _text_config(model, model.text)
        batched = bool(model.inputs) and model.inputs[0].shape[:1] == (-1,)
        skip = 1 if batched else 0
        config = model_config_pb2.ModelConfig(
            name=model.name,
            platform=PLATFORM,
            backend="onnxruntime",
            max_batch_size=self._engine.max_batch if batched else 0,
        )
        # With named inputs every input is optional: a request sends one of the alternatives.
        alternatives = model.named is not None
        for s in model.inputs:
            config.input.add(
                name=s.name,
                data_type=V2_TO_CONFIG[s.datatype],
                dims=s.shape[skip:],
                optional=alternatives,
            )
        if model.named is not None:
            for n in model.named.tensors():
                config.input.add(
                    name=n.name, data_type=V2_TO_CONFIG[n.datatype], dims=n.shape[1:], optional=True
                )
            config.parameters[FEATURE_SCHEMA].string_value = model.named.space.to_json()
        for s in model.outputs:
            config.output.add(name=s.name, data_type=V2_TO_CONFIG[s.datatype], dims=s.shape[skip:])
        if self._engine.batching:
            config.dynamic_batching.max_queue_delay_microseconds = int(
                self._engine.max_delay_s * 1e6
            )
        return config


def _only(
    answers: Generator[pb.ModelInferResponse, None, int],
) -> tuple[pb.ModelInferResponse, int]:
    """The one response of a unary request's answers, and the rows they return."""
    responses = []
    try:
        while True:
            responses.append(next(answers))
    except StopIteration as done:
        rows = int(done.value)
    (response,) = responses
    return response, rows


def _waiting(context: Any) -> Callable[[], bool]:
    """Whether the caller still waits, as gRPC's `is_active` says.

    An in-process caller that passes no gRPC context (tools, tests) always waits.
    """
    active = getattr(context, "is_active", None)
    return active if callable(active) else _always


def _always() -> bool:
    return True


def _text_config(model: LoadedModel, graph: text.TextGraph) -> model_config_pb2.ModelConfig:
    """A language model's config: the wire tensors, no implicit batch, its context."""
    config = model_config_pb2.ModelConfig(
        name=model.name, platform=PLATFORM, backend="onnxruntime", max_batch_size=0
    )
    for tensor in text.WIRE_INPUTS:
        config.input.add(
            name=tensor.name, data_type=V2_TO_CONFIG[tensor.datatype], dims=tensor.shape
        )
    for tensor in text.wire_outputs(graph):
        config.output.add(
            name=tensor.name, data_type=V2_TO_CONFIG[tensor.datatype], dims=tensor.shape
        )
    config.parameters[text.CONTEXT_KEY].string_value = str(graph.context)
    return config
