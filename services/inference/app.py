"""Wiring of the inference service: repository, engine, follower, gRPC server, metrics."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from grpc import Server
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from prometheus_client import start_http_server

from inference import _pool, grpc_service_pb2_grpc
from services.inference import stats
from services.inference.engine import Engine
from services.inference.follower import EventWatcher, FollowerFailed, VersionFollower
from services.inference.names import SERVICE as SERVICE
from services.inference.prediction_log import PredictionLog, kafka_sink
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings
from services.inference.text_requests import TextLimits
from shared.clients.registry import RegistryClient
from shared.grpc.server import ServiceBinding, build_server, mark_draining, mark_serving
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import consumer_config, producer_config

log = logging.getLogger(__name__)

FOLLOWER_CHECK_S = 1.0
# More follower restarts than this within the window: exit and let the supervisor restart.
FOLLOWER_MAX_RESTARTS = 5
FOLLOWER_RESTART_WINDOW_S = 60.0


@dataclass
class InferenceApp:
    """A built, not yet running, inference service."""

    settings: InferenceSettings
    engine: Engine
    watcher: EventWatcher
    registry: RegistryClient
    server: Server
    health: HealthServicer
    port: int
    # Set with INFERENCE_LOG_PREDICTIONS: the log and the producer its sink writes with.
    prediction_log: PredictionLog | None = None
    log_producer: Producer | None = None


def build(settings: InferenceSettings) -> InferenceApp:
    """Build everything; nothing is loaded or served until `run`."""
    repository = Repository(settings.model_names, settings.keep_loaded)
    engine = Engine(repository, settings.max_batch_size, settings.max_queue_delay_us / 1e6)
    registry = RegistryClient(settings.registry_address, security=settings.registry_client())
    followers = [
        VersionFollower(
            m,
            registry,
            settings.alias,
            settings.pinned_version,
            settings.device,
            settings.intra_op_threads,
        )
        for m in repository.all()
    ]
    ensure_topics(
        AdminClient(settings.kafka.client_config()),
        [t for t in standard_topics(settings.topics) if t.name == settings.topics.model_events],
    )

    def new_consumer() -> Consumer:
        # A group of its own per replica: every replica sees every event; offsets unused.
        return Consumer(consumer_config(settings.kafka, f"inference-{uuid.uuid4().hex[:12]}"))

    watcher = EventWatcher(
        followers,
        new_consumer(),
        settings.topics.model_events,
        settings.resync_s,
        new_consumer=new_consumer,
    )
    prediction_log, log_producer = _prediction_log(settings)
    text_limits = TextLimits(
        settings.max_text_bytes, settings.max_new_bytes, settings.max_request_bytes
    )
    servicer = InferenceServicer(engine, settings.max_request_bytes, prediction_log, text_limits)
    binding = ServiceBinding(
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        SERVICE,
        _pool.POOL,
    )
    server, health, port = build_server(
        f"0.0.0.0:{settings.grpc_port}",
        [binding],
        max_workers=settings.grpc_workers,
        max_message_bytes=settings.max_request_bytes + 1024 * 1024,
        security=settings.security,
        reuse_port=settings.reuse_port or None,
    )
    watcher.on_failure = health_reporter(health)
    return InferenceApp(
        settings, engine, watcher, registry, server, health, port, prediction_log, log_producer
    )


def _prediction_log(settings: InferenceSettings) -> tuple[PredictionLog | None, Producer | None]:
    """The prediction log and its producer, when INFERENCE_LOG_PREDICTIONS asks for one."""
    models = settings.logged_models()
    if models == []:
        return None, None
    topic = settings.topics.predictions
    ensure_topics(
        AdminClient(settings.kafka.client_config()),
        [t for t in standard_topics(settings.topics) if t.name == topic],
    )
    producer = Producer(producer_config(settings.kafka))
    log_ = PredictionLog(
        kafka_sink(producer, topic),
        models,
        settings.prediction_log_streams,
        settings.prediction_log_queue,
    )
    return log_, producer


def health_reporter(health: HealthServicer) -> Callable[[BaseException], None]:
    """What a dying follower calls: the service is NOT_SERVING, its versions would go stale."""

    def report(_exc: BaseException) -> None:
        health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)

    return report


class FollowerGuard:
    """Keeps the model-events follower alive, and health SERVING only while it follows.

    A dead follower is restarted on a new consumer and health is NOT_SERVING until the new
    one completes a poll cycle. More than `max_restarts` restarts within `window_s` is a
    persistent failure: `FollowerFailed` ends the process (exit 1), whose supervisor
    (streamlearn's, or Kubernetes) starts it afresh.
    """

    def __init__(
        self,
        watcher: EventWatcher,
        health: HealthServicer,
        repository: Repository,
        max_restarts: int = FOLLOWER_MAX_RESTARTS,
        window_s: float = FOLLOWER_RESTART_WINDOW_S,
    ) -> None:
        self._watcher = watcher
        self._health = health
        self._repository = repository
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._restarts: deque[float] = deque()
        self.serving = False

    def check(self) -> bool:
        """Restart a dead follower, or mark SERVING once it follows; True if restarted.

        Raises:
            FollowerFailed: The follower died more than `max_restarts` times in `window_s`.

        """
        if not self._watcher.alive():
            self._restart()
            return True
        if not self.serving and self._watcher.following() and self._repository.ready():
            mark_serving(self._health, [SERVICE])
            self.serving = True
            log.info("inference serving")
        return False

    def _restart(self) -> None:
        self._health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.serving = False
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self._window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self._max_restarts:
            log.critical(
                "the model-events follower keeps dying: exiting to be restarted",
                extra={"restarts": len(self._restarts), "window_s": self._window_s},
            )
            raise FollowerFailed(
                f"model-events follower died {len(self._restarts) + 1} times "
                f"within {self._window_s:.0f}s"
            )
        self._restarts.append(now)
        stats.FOLLOWER_RESTARTS.inc()
        log.error("restarting the model-events follower on a new consumer")
        try:
            self._watcher.restart()
        except Exception:  # e.g. Kafka down: the next check tries again, counted as well
            log.exception("the model-events follower did not restart")
            return
        self._watcher.reconcile_all()  # events it missed while dead


def run(app: InferenceApp, stop: threading.Event) -> None:
    """Load the target versions, serve until `stop`, then drain in-flight requests.

    Raises:
        FollowerFailed: The model-events follower kept dying (the process should exit 1).

    """
    if app.settings.metrics_port:
        start_http_server(app.settings.metrics_port)
    if app.prediction_log is not None:
        app.prediction_log.start()
    # A worker of several (they share the port) listens only once its versions are loaded:
    # the kernel would hand it connections, and a probe answered by a ready sibling would
    # not tell. A lone process listens at once, its health saying when it is ready.
    listen_when_ready = app.settings.reuse_port
    if not listen_when_ready:
        app.server.start()
        log.info("inference listening", extra={"port": app.port})
    app.watcher.start()
    guard = FollowerGuard(app.watcher, app.health, app.engine.repository)
    try:
        while not stop.is_set() and not app.engine.repository.ready():
            app.watcher.reconcile_all()
            guard.check()
            stop.wait(1.0)
        if listen_when_ready and not stop.is_set():
            app.server.start()
            log.info("inference listening", extra={"port": app.port})
        while not stop.is_set():
            guard.check()  # SERVING once the follower has polled, soon after the start
            stop.wait(FOLLOWER_CHECK_S if guard.serving else 0.05)
    finally:
        drain(app, delay_s=app.settings.drain_delay_s if stop.is_set() else 0.0)
        app.watcher.stop()
        app.engine.close()
        if app.prediction_log is not None:
            app.prediction_log.close()
        if app.log_producer is not None:
            app.log_producer.flush(5.0)
        app.registry.close()
        log.info("inference stopped")


def drain(app: InferenceApp, delay_s: float) -> None:
    """Readiness first, then the server: no request is refused while clients still send.

    Health turns NOT_SERVING (readiness probes fail, balancers and round-robin clients
    leave), requests keep being answered for `delay_s`, then the server stops taking new
    calls and in-flight ones get `drain_grace_s` to finish (grpc sends GOAWAY).
    """
    mark_draining(app.health)
    log.info(
        "inference draining", extra={"delay_s": delay_s, "grace_s": app.settings.drain_grace_s}
    )
    time.sleep(delay_s)
    app.server.stop(app.settings.drain_grace_s).wait()
