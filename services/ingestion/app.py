"""Wiring of the ingestion service: topics, stream catalog, router, engine, gRPC ingest.

The engine that routes the raw topic is `INGESTION_ENGINE`: `kafka` (the default, a
confluent-kafka loop, `engine`) or `faust` (the faust-streaming worker, `worker`). faust is
imported only when it is chosen.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from grpc import Server
from grpc_health.v1.health import HealthServicer
from prometheus_client import start_http_server

from services.ingestion import dedup
from services.ingestion.publisher import RawPublisher
from services.ingestion.router import Router
from services.ingestion.servicer import SERVICE, IngestionServicer
from services.ingestion.settings import IngestionSettings
from services.ingestion.topology import check_limits, match_partitions
from services.ingestion.validation import TimeLimits
from shared.errors import Unavailable
from shared.grpc.server import ServiceBinding, build_server, mark_draining, mark_serving
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import producer_config
from shared.streams import StreamCatalog
from streamlearn.v1 import ingest_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class IngestionApp:
    """A built, not yet running, ingestion service."""

    settings: IngestionSettings
    catalog: StreamCatalog
    publisher: RawPublisher
    router: Router
    server: Server
    health: HealthServicer
    port: int
    # Why the engine stopped itself (an output not written), for the exit status.
    failures: list[BaseException] = field(default_factory=list)
    worker_app: Any = None  # the faust app, with INGESTION_ENGINE=faust


def build(settings: IngestionSettings, stop: threading.Event) -> IngestionApp:
    """Create missing topics, load the stream definitions and build the engine and server."""
    topics = settings.topics
    admin = AdminClient(settings.kafka.client_config())
    wanted = (topics.raw, topics.train, topics.dlq, topics.streams, topics.feedback)
    ensure_topics(admin, [t for t in standard_topics(topics) if t.name in wanted])
    check_limits(admin, (topics.raw, topics.train, topics.dlq), settings.max_message_bytes)
    _match_partitions(admin, settings)
    dedup.warm()  # the memory's kernels load now, before the service is ready, not mid-stream
    catalog = StreamCatalog(settings.kafka, topics.streams).start()
    limits = TimeLimits(int(settings.max_future_skew_s * 1000), int(settings.max_age_s * 1000))
    router = Router(catalog.get, limits, settings.max_message_bytes)
    # The gRPC front door writes what the router accepted: records within the one limit.
    config = producer_config(settings.kafka, message_max_bytes=settings.max_message_bytes)
    publisher = RawPublisher(Producer(config), topics.raw)
    binding = ServiceBinding(
        ingest_pb2_grpc.add_IngestionServicer_to_server,
        IngestionServicer(router, publisher, topics.feedback),
        SERVICE,
    )
    server, health, port = build_server(
        f"0.0.0.0:{settings.grpc_port}", [binding], security=settings.security
    )
    app = IngestionApp(settings, catalog, publisher, router, server, health, port)
    if settings.engine == "faust":
        from services.ingestion.worker import Failure, build_app

        failure = Failure()
        app.worker_app = (build_app(settings, router, stop, failure), failure)
    return app


def run(app: IngestionApp, stop: threading.Event) -> None:
    """Serve gRPC and run the engine until SIGTERM/SIGINT, then drain.

    Raises:
        Unavailable: the engine stopped itself because an output was not written (exit
            status 1: the supervisor restarts it and the raw records are redelivered).

    """
    if stop.is_set():  # stopped while starting up
        app.publisher.close()
        app.catalog.close()
        return
    if app.settings.metrics_port:
        start_http_server(app.settings.metrics_port)
    app.server.start()
    mark_serving(app.health, [SERVICE])
    log.info(
        "ingestion running",
        extra={
            "grpc_port": app.port,
            "raw": app.settings.topics.raw,
            "engine": app.settings.engine,
        },
    )
    try:
        if app.worker_app is not None:
            _run_faust(app)
        else:
            from services.ingestion.engine import Engine

            Engine(app.settings, app.router, stop, app.failures).run()
    finally:
        mark_draining(app.health)
        app.server.stop(5).wait()
        app.publisher.close()
        app.catalog.close()
        log.info("ingestion stopped")
    if app.failures:
        raise Unavailable(f"an output was not written: {app.failures[0]!r}")


def _run_faust(app: IngestionApp) -> None:
    import faust

    worker_app, failure = app.worker_app
    worker = faust.Worker(
        worker_app,
        loglevel=app.settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()  # returns by SystemExit once stopped
    finally:
        if failure.error is not None:
            app.failures.append(failure.error)


def _match_partitions(admin: AdminClient, settings: IngestionSettings) -> None:
    """Outputs keep the raw partition: add theirs when the raw topic has more (opt-in).

    Only with `INGESTION_GROW_OUTPUTS=true`; otherwise the engine holds the raw partitions the
    outputs lack. A refusal is logged, not raised: the engine holds those partitions and
    retries, with a metric, rather than the service restarting in a loop.
    """
    topics = settings.topics
    if not settings.grow_outputs:
        return
    try:
        match_partitions(admin, topics.raw, (topics.train, topics.dlq))
    except Exception as exc:  # see above
        log.error("outputs lack partitions of the raw topic", extra={"error": repr(exc)})
