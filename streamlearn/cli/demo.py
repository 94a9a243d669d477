"""`streamlearn demo`: the whole system learning a drifting stream, on a live dashboard."""

from __future__ import annotations

import time

import typer
from rich.console import Console, Group
from rich.live import Live

from services.trainer.settings import TrainerSettings
from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, Conflict
from shared.settings import KafkaSettings
from shared.streams import load_definitions, publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.streams import streams_topic
from streamlearn.client.datasets import Synthetic
from streamlearn.client.inference import InferenceClient
from streamlearn.system import demo_state
from streamlearn.system.control import LocalSystem
from streamlearn.system.feed import Feed
from streamlearn.system.summary import DemoResult, dashboard, summary
from streamlearn.system.watch import TrainerMetricsFollower, Watch


def demo(
    ctx: typer.Context,
    duration: float = typer.Option(180.0, min=5, help="Seconds to stream before the summary."),
    rate: float = typer.Option(2000.0, min=1, help="Samples per second sent."),
    keep_running: bool = typer.Option(False, help="Leave the system up afterwards."),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Start from a clean model and sample topics (the model's checkpoint; raw, train, "
        "dead-letter and metrics topics, shared by every stream and model); stream definitions "
        "and the registry stay. Refused while other models' trainer checkpoints exist.",
    ),
    yes: bool = typer.Option(
        False,
        "--yes",
        help="Confirm --fresh against an external cluster (STREAMLEARN_KAFKA_BOOTSTRAP).",
    ),
) -> None:
    """Start everything, stream a synthetic dataset whose concept flips halfway, watch it learn.

    The dashboard shows events/s, the trainer's prequential metrics, versions registered and
    served, and the accuracy of the served model (fetched over gRPC) on held-out events of
    the current concept. Ends after `--duration` or on Ctrl-C with a summary.
    """
    console = Console()
    settings = settings_of(ctx)
    system = LocalSystem(settings)
    # What the supervised trainer learns (the same environment) and where it checkpoints.
    trainer = TrainerSettings(state_dir=settings.state_dir)
    started_here = system.supervisor_pid() is None
    if fresh:
        _start_over(console, system, trainer, yes)
    resumes = trainer.checkpoint_path.exists()
    with console.status("starting Kafka and the services (the first run resolves the jars)"):
        specs = system.up()
    address = {s.name: s.address for s in specs}
    start = demo_state.describe(address["registry"], trainer.model_name, resumes)
    console.print(start)
    kafka = system.settings.kafka()
    dataset = Synthetic(
        "drift", features=trainer.config.model.features, drift_every=int(rate * duration / 2)
    )
    _ensure_stream(kafka, trainer.stream, dataset)
    result = DemoResult(duration, dataset.drift_every / rate, start=start)
    try:
        result = _run(console, kafka, trainer, address, dataset, rate, result)
    finally:
        if started_here and not keep_running:
            with console.status("stopping the services and the broker"):
                system.down()
    console.print(summary(result))
    if not result.history:
        raise typer.Exit(1)  # nothing was ever served: the pipeline is broken


def _start_over(
    console: Console, system: LocalSystem, trainer: TrainerSettings, confirmed: bool
) -> None:
    """Refuse an unsafe reset, say what goes, stop the services, then reset.

    The services stop first: a running trainer would write its checkpoint back.
    """
    external = bool(system.settings.kafka_bootstrap)
    demo_state.refuse_unsafe(
        trainer.topics, trainer.checkpoint_path, external=external, confirmed=confirmed
    )
    bootstrap = system.settings.kafka().bootstrap_servers
    console.print(demo_state.announce(bootstrap, trainer.topics, trainer.checkpoint_path))
    with console.status("stopping the services for a fresh start"):
        system.down(stop_kafka=False)
    with console.status("emptying the demo's model and topics"):
        kafka = kafka_for_cli(system.settings)
        demo_state.reset(kafka, trainer.topics, trainer.checkpoint_path, console.print)


def _run(
    console: Console,
    kafka: KafkaSettings,
    trainer: TrainerSettings,
    address: dict[str, str],
    dataset: Synthetic,
    rate: float,
    result: DemoResult,
) -> DemoResult:
    feed = Feed(kafka, trainer.stream, dataset, rate, int(rate * result.duration_s))
    metrics = TrainerMetricsFollower(kafka, trainer.topics.metrics, trainer.model_name)
    with (
        RegistryClient(address["registry"]) as registry,
        InferenceClient(address["inference"]) as inference,
    ):
        watch = Watch(
            metrics,
            registry,
            inference,
            trainer.model_name,
            lambda: dataset.holdout(1024, min(feed.sent, feed.total - 1)),
        ).start()
        feed.start()
        started = time.monotonic()
        try:
            with Live(console=console, refresh_per_second=4) as live:
                while time.monotonic() - started < result.duration_s:
                    live.update(Group(dashboard(watch.snapshot, feed, started, result)))
                    time.sleep(0.25)
        except KeyboardInterrupt:
            console.print("interrupted")
        finally:
            result.elapsed_s = time.monotonic() - started
            result.delivered = feed.stop()
            watch.stop()
    result.history = watch.snapshot.history
    result.trainer = watch.snapshot.trainer
    result.latest_version = watch.snapshot.latest_version
    return result


def _ensure_stream(kafka: KafkaSettings, stream: str, dataset: Synthetic) -> None:
    """Define the demo stream, or check that an existing one has the trainer's shape."""
    topic = streams_topic(kafka)
    try:
        publish_definition(kafka, topic, dataset.definition(stream))
    except Conflict:
        current = {d.name: d for d in load_definitions(kafka, topic)}[stream]
        if current.dense_dim != dataset.features:
            raise ConfigError(
                f"stream {stream!r} exists with {current.dense_dim} features but the trainer "
                f"learns {dataset.features}; set TRAINER_STREAM to another stream"
            ) from None
