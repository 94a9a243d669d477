"""`streamlearn demo`: the whole system learning a drifting stream, on a live dashboard."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console, Group
from rich.live import Live

from services.inference.settings import InferenceSettings
from services.joiner.settings import JoinerSettings
from services.trainer.settings import TrainerSettings
from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, Conflict
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import load_definitions, publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.streams import streams_topic
from streamlearn.client.datasets import Synthetic
from streamlearn.system import demo_state
from streamlearn.system.clicks import SimulatedUser
from streamlearn.system.control import LocalSystem
from streamlearn.system.feed import Feed, FeedbackFeed
from streamlearn.system.summary import DemoResult, dashboard, summary
from streamlearn.system.traffic import TrafficClient
from streamlearn.system.watch import JoinFollower, TrainerMetricsFollower, Watch

# demo --feedback: how long a click may take, and the silence that makes a negative.
WINDOW_S, NEGATIVE_AFTER_S = 5.0, 3.0
MAX_CLICK_DELAY_S = 2.0
BOOTSTRAP = 1000  # labelled samples for a first version when none is served yet
MAX_ROWS_PER_REQUEST = 64


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
    feedback: bool = typer.Option(
        False,
        "--feedback",
        help="Learn from traffic: send unlabelled requests to inference; a simulated user "
        "clicks with the concept's true probability, reported after a random delay, and "
        "the joiner makes training samples of them (silence: a negative after "
        f"{NEGATIVE_AFTER_S:.0f}s). The system must log predictions: a running one must "
        "have been started with INFERENCE_LOG_PREDICTIONS=true.",
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
    defaults = _prediction_log(trainer) if feedback else {}
    with console.status("starting Kafka and the services (the first run resolves the jars)"):
        specs = system.up(defaults=defaults)
    address = {s.name: s.address for s in specs}
    start = demo_state.describe(address["registry"], trainer.model_name, resumes)
    console.print(start)
    kafka = system.settings.kafka()
    dataset = Synthetic(
        "drift", features=trainer.config.model.features, drift_every=int(rate * duration / 2)
    )
    _ensure_stream(kafka, trainer.stream, dataset, feedback)
    result = DemoResult(duration, dataset.drift_every / rate, start=start)
    try:
        result = _run(console, kafka, trainer, address, dataset, rate, result, feedback)
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


def _prediction_log(trainer: TrainerSettings) -> dict[str, str]:
    """Inference settings that log the predictions, as the stream the trainer learns.

    Defaults for the system this demo starts (what the caller's environment sets wins; a
    running system is reused as it is).
    """
    return {
        "INFERENCE_LOG_PREDICTIONS": json.dumps([trainer.model_name]),
        "INFERENCE_PREDICTION_LOG_STREAMS": json.dumps({trainer.model_name: trainer.stream}),
    }


def _run(
    console: Console,
    kafka: KafkaSettings,
    trainer: TrainerSettings,
    address: dict[str, str],
    dataset: Synthetic,
    rate: float,
    result: DemoResult,
    feedback: bool = False,
) -> DemoResult:
    total = int(rate * result.duration_s)
    metrics = TrainerMetricsFollower(kafka, trainer.topics.metrics, trainer.model_name)
    with (
        RegistryClient(address["registry"]) as registry,
        TrafficClient(address["inference"]) as inference,
    ):
        feed: Feed | FeedbackFeed
        joins = None
        if feedback:
            topics = JoinerSettings(state_dir=trainer.state_dir).topics
            feed = _feedback_feed(kafka, topics, inference, trainer, dataset, (rate, total))
            joins = JoinFollower(kafka, topics.train, topics.dlq, trainer.stream)
        else:
            feed = Feed(kafka, trainer.stream, dataset, rate, total)
        watch = Watch(
            metrics,
            registry,
            inference,
            trainer.model_name,
            lambda: dataset.holdout(1024, min(feed.sent, feed.total - 1)),
            joins=joins,
        ).start()
        feed.start()
        started = time.monotonic()
        try:
            with Live(console=console, refresh_per_second=4) as live:
                while time.monotonic() - started < result.duration_s and feed.error is None:
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
    result.joins = watch.snapshot.joins
    return result


def _feedback_feed(
    kafka: KafkaSettings,
    topics: TopicSettings,
    inference: TrafficClient,
    trainer: TrainerSettings,
    dataset: Synthetic,
    pace: tuple[float, int],
) -> FeedbackFeed:
    """Requests in batches the server takes, clicked on by a simulated user."""
    batch = InferenceSettings(state_dir=trainer.state_dir).max_batch_size
    return FeedbackFeed(
        kafka,
        topics,
        inference,
        (trainer.model_name, trainer.stream),
        dataset,
        SimulatedUser(dataset, max_delay_s=MAX_CLICK_DELAY_S, seed=dataset.seed),
        pace,
        rows_per_request=min(batch, MAX_ROWS_PER_REQUEST),
        bootstrap=BOOTSTRAP,
    )


def _ensure_stream(
    kafka: KafkaSettings, stream: str, dataset: Synthetic, feedback: bool = False
) -> None:
    """Define the demo stream, or check that an existing one has the trainer's shape.

    With `feedback`, the stream joins predictions with clicks (negatives after a silence):
    an existing stream without that policy gets it as a new revision.
    """
    topic = streams_topic(kafka)
    definition = dataset.definition(stream)
    if feedback:
        definition.join.window_s, definition.join.negative_after_s = WINDOW_S, NEGATIVE_AFTER_S
    try:
        publish_definition(kafka, topic, definition)
    except Conflict:
        current = {d.name: d for d in load_definitions(kafka, topic)}[stream]
        if current.dense_dim != dataset.features:
            raise ConfigError(
                f"stream {stream!r} exists with {current.dense_dim} features but the trainer "
                f"learns {dataset.features}; set TRAINER_STREAM to another stream"
            ) from None
        if feedback and current.join != definition.join:
            current.join.CopyFrom(definition.join)
            publish_definition(kafka, topic, current, replace=True)
