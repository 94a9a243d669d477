"""Registry latency as versions pile up: a day of one version per second (100,000 versions).

The versions are registered through the registry's core (the same code the gRPC servicer
calls); at 1k, 10k and 100k versions, register / get-latest / resolve-alias / list-first-page
are timed through real gRPC. The baseline of each figure is the same call at 1k versions in
the same run, so a ratio near 1 means flat (MLflow's registry slows down with thousands).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.core import BenchContext, Figure
from services.registry import app as registry_app
from services.registry.registry import Registry
from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.settings import TopicSettings

MODEL = "bench"
CALLS = 200


def run(ctx: BenchContext) -> list[Figure]:
    """Fill to each checkpoint, time the four calls there, compare with the first checkpoint."""
    checkpoints = [ctx.count(n) for n in (1_000, 10_000, 100_000)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = RegistrySettings(
            state_dir=Path(tmp),
            grpc_port=0,
            kafka=ctx.kafka,
            log_json=False,
            keep_last_versions=10**9,  # the point is to hold every version: no retention
            topics=TopicSettings(model_events=f"bench.registry.events.{uuid.uuid4().hex[:8]}"),
        )
        app = registry_app.build(settings)
        stop = threading.Event()
        server = threading.Thread(target=registry_app.run, args=(app, stop), daemon=True)
        server.start()
        try:
            with RegistryClient(f"127.0.0.1:{app.port}") as client:
                client.create_model(MODEL)
                timings = {n: _measure_at(app.registry, client, n) for n in checkpoints}
        finally:
            stop.set()
            server.join(60)
    first = checkpoints[0]
    return [
        Figure(
            f"{call} @ {n:,} versions",
            timings[n][call],
            "ms",
            f"@ {first:,} versions",
            timings[first][call],
            higher_is_better=False,
        )
        for n in checkpoints[1:]
        for call in timings[n]
    ]


def _measure_at(registry: Registry, client: RegistryClient, target: int) -> dict[str, float]:
    _fill(registry, max(1, target - CALLS))  # the timed registers add the rest
    latest = registry.get_model(MODEL).latest_version
    client.set_alias(MODEL, "production", max(1, latest // 2))
    return {
        "register": _median_ms(lambda: client.register(MODEL, uuid.uuid4().bytes)),
        "get-latest": _median_ms(lambda: client.get_version(MODEL)),
        "resolve-alias": _median_ms(lambda: client.get_version(MODEL, alias="production")),
        "list-first-page": _median_ms(lambda: client.list_versions(MODEL, page_size=50)),
    }


def _fill(registry: Registry, target: int) -> None:
    """Register small distinct artifacts through the core until `target` versions exist."""
    while (latest := registry.get_model(MODEL).latest_version) < target:
        data = f"weights-{latest}".encode()
        registry.register_version(MODEL, [data], hashlib.sha256(data).hexdigest(), len(data))


def _median_ms(call: Callable[[], object]) -> float:
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)
