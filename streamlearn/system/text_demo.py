"""`streamlearn demo --text`: a byte-level language model learns two domains, one after another.

The feed streams texts of the `animals` grammar for the first half of the run and of the
`code` grammar for the second (`grammars.py`), each sample tagged with its `domain`. The
trainer holds every 20th text of each domain out, so each version reports the bits per
byte of each domain's held-out texts and how much of the best it has forgotten. The
dashboard follows the trainer's metrics, the versions served, and a greedy continuation of
one prompt per domain by the served version; the summary compares start and end.

Every run that starts the system starts a fresh model (`demo-text`, its checkpoint
removed) on a stream of its own (`demo-text-<run>`): a trainer without a checkpoint reads
the training topic from its start, and a stream of its own keeps earlier runs' texts out.
`--replay R` sets the trainer's `replay_ratio`, so two runs compare forgetting with and
without replay. A running system is reused only if it serves `demo-text`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import islice
from typing import Self

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.live import Live

from services.inference.settings import InferenceSettings
from services.trainer.settings import TrainerSettings
from services.trainer.text.config import TextModelConfig
from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, Conflict, StreamlearnError
from shared.kafka.admin import ensure_topics, standard_topics
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.settings import CliSettings
from streamlearn.client.inference import InferenceClient
from streamlearn.client.producer import SampleProducer
from streamlearn.system.control import LocalSystem
from streamlearn.system.feed import BackgroundFeed
from streamlearn.system.grammars import PROMPTS, TwoDomains
from streamlearn.system.text_view import (
    MODEL,
    FeedProgress,
    Sample,
    TextDemoResult,
    dashboard,
    printable,
    take_report,
)
from streamlearn.system.watch import TrainerMetricsFollower, latest_version
from streamlearn.v1 import stream_pb2

TEXT_MAX_BYTES = 256  # the stream's limit: the grammars write at most 160 bytes
SAMPLE_BYTES = 48  # bytes generated after each prompt
SAMPLE_EVERY_S = 3.0  # at most one round of samples this often (each version is greedy)
KEYS = 8  # texts spread over the raw topic's partitions by key
SETTLE_S = 15.0  # after the feed stops: how long to wait for the trainer to report it all
# Versions (and with them metrics) every 2 s: often enough to follow, and on two CPU cores
# the exports leave the trainer most of its time to learn.
VERSION_EVERY_S = "2"


def demo_config(replay: float) -> TextModelConfig:
    """A model that learns the grammars within seconds on a couple of CPU cores.

    The metrics window is short (200 texts, 4 s at the default rate) so that the window's
    bits per byte shows the switch of domain within seconds.
    """
    return TextModelConfig(
        layers=2,
        width=64,
        heads=4,
        context=64,
        max_text_bytes=TEXT_MAX_BYTES,
        metrics_window=200,
        holdout_every=20,
        holdout_size=16,
        replay_ratio=replay,
    )


def system_defaults(stream: str, config: TextModelConfig) -> dict[str, str]:
    """What the services this demo starts get unless the caller's environment sets it."""
    return {
        "TRAINER_MODEL_NAME": MODEL,
        "TRAINER_STREAM": stream,
        "TRAINER_TEXT": config.model_dump_json(),
        # A tiny model learns fastest on one thread: two contend on a two-core box.
        "TRAINER_TORCH_THREADS": "1",
        "TRAINER_VERSION_EVERY_S": VERSION_EVERY_S,
        "INFERENCE_MODEL_NAMES": json.dumps([MODEL]),
    }


# -- the traffic and the watch ------------------------------------------------------------


class TextFeed(BackgroundFeed):
    """Sends `total` texts of `domains` at `rate`/s, in bursts of 50 ms, on its own thread."""

    def __init__(
        self, producer: SampleProducer, domains: TwoDomains, rate: float, total: int
    ) -> None:
        super().__init__(producer, "text-feed")
        self._domains, self._rate, self.total = domains, rate, total
        self._started = time.monotonic()
        self.progress = FeedProgress(0, domains.domain_at(0))

    def start(self) -> Self:
        """Begin sending (the pace and the switch time count from now)."""
        self._started = time.monotonic()
        return super().start()

    def _send(self) -> None:
        burst = max(1, int(self._rate / 20))
        for n, (domain, text) in enumerate(islice(self._domains.texts(), self.total)):
            if self._stop.is_set():
                return
            self._producer.send(
                {"key": f"text-{n % KEYS}", "text": text, "attributes": {"domain": domain}}
            )
            self._advance(domain)
            if self.progress.sent % burst == 0 and self._pace():
                return

    def _advance(self, domain: str) -> None:
        """Count one text; the first of another domain marks the switch."""
        progress = self.progress
        switched = progress.switched_at
        if domain != progress.domain and progress.sent:
            switched = time.monotonic() - self._started
        self.progress = FeedProgress(progress.sent + 1, domain, switched)

    def _pace(self) -> bool:
        """Wait until the rate allows the next burst; True when stopped meanwhile."""
        ahead = self._started + self.progress.sent / self._rate - time.monotonic()
        return ahead > 0 and self._stop.wait(ahead)


class TextWatch:
    """Follows the trainer's reports, the registry and the served version; takes samples."""

    def __init__(
        self,
        metrics: TrainerMetricsFollower,
        registry: RegistryClient,
        inference: InferenceClient,
        result: TextDemoResult,
        every_s: float = 0.5,
    ) -> None:
        self._metrics, self._registry, self._inference = metrics, registry, inference
        self._result, self._every_s = result, every_s
        self._sampled_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="text-watch", daemon=True)

    def start(self) -> TextWatch:
        """Begin watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and close the metrics consumer."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(30)
        self._metrics.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()

    def tick(self) -> None:
        """One round: read reports, versions, and when a new version serves, samples."""
        snapshot = self._result.snapshot
        self._metrics.poll(self._every_s)
        take_report(snapshot, self._metrics.latest, self._result.stream)
        snapshot.latest_version = latest_version(self._registry, MODEL)
        try:
            snapshot.served_version = self._inference.served().get(MODEL, 0)
        except StreamlearnError:
            return  # inference restarting: the next round asks again
        if self._sample_due():
            self._take_samples(snapshot.served_version)

    def _sample_due(self) -> bool:
        served = self._result.served
        if not served or time.monotonic() - self._sampled_at < SAMPLE_EVERY_S:
            return False
        samples = self._result.snapshot.samples.values()
        return not samples or any(s.version != served for s in samples)

    def _take_samples(self, version: int) -> None:
        self._sampled_at = time.monotonic()
        for domain, prompt in PROMPTS.items():
            try:
                data = self._inference.generate(MODEL, prompt, SAMPLE_BYTES, version=version)
            except StreamlearnError:
                return  # the version was swapped out meanwhile: the next round tries again
            self._result.snapshot.samples[domain] = Sample(version, prompt, printable(data))


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the user asked for."""

    duration_s: float
    rate: float
    replay: float
    keep_running: bool


def served_models(address: str) -> dict[str, int]:
    """The models a running inference server serves (empty: it does not answer)."""
    try:
        with InferenceClient(address, timeout=5.0) as client:
            models: dict[str, int] = client.served()
    except StreamlearnError:
        return {}
    return models


def refuse_unless_serving(models: dict[str, int]) -> None:
    """A running system is reused only if it serves the text demo's model.

    Raises:
        Conflict: it serves other models (or does not answer).

    """
    if MODEL not in models:
        serves = ", ".join(sorted(models)) or "nothing that answers"
        raise Conflict(
            f"a system is already running and it does not serve the text model {MODEL!r} "
            f"(it serves {serves}): run `streamlearn down` first, then `streamlearn demo --text`"
        )


def refuse_env_conflicts(trainer: TrainerSettings, inference: InferenceSettings) -> None:
    """The demo names its model and stream: the environment must not name others.

    The services take the caller's environment over the demo's defaults, so a trainer told
    to learn another stream would leave the demo watching nothing.

    Raises:
        ConfigError: TRAINER_MODEL_NAME, TRAINER_STREAM or INFERENCE_MODEL_NAMES is set
            (the last: without the demo's model).

    """
    named = []
    if "model_name" in trainer.model_fields_set or trainer.stream != trainer.model_name:
        named.append("TRAINER_MODEL_NAME / TRAINER_STREAM")
    if "model_names" in inference.model_fields_set and MODEL not in inference.model_names:
        named.append("INFERENCE_MODEL_NAMES")
    if named:
        raise ConfigError(
            f"demo --text names its own model and stream ({MODEL}): unset {', '.join(named)}"
        )


def run(console: Console, settings: CliSettings, options: Options) -> TextDemoResult:
    """Start (or reuse) the system, stream both domains, watch; the result for the summary.

    Raises:
        Conflict: a running system does not serve the text model.
        ConfigError: the environment names another model or stream.

    """
    system = LocalSystem(settings)
    address = {s.name: s.address for s in system.plan()}
    trainer = TrainerSettings(state_dir=settings.state_dir, model_name=MODEL)
    started_here = system.supervisor_pid() is None
    if started_here:
        result = _start(console, system, options)
    else:
        refuse_unless_serving(served_models(address["inference"]))
        result = _reuse(address["registry"], options)
    try:
        _stream_texts(console, system.settings.kafka(), trainer.topics, address, result)
    finally:
        if started_here and not options.keep_running:
            with console.status("stopping the services and the broker"):
                system.down()
            # The model is the demo's alone; a checkpoint left behind would hold offsets
            # that make `demo --fresh` refuse.
            trainer.checkpoint_path.unlink(missing_ok=True)
    return result


def _start(console: Console, system: LocalSystem, options: Options) -> TextDemoResult:
    """A fresh model on a stream of its own, defined before the trainer starts."""
    trainer = TrainerSettings(state_dir=system.settings.state_dir)
    refuse_env_conflicts(trainer, InferenceSettings(state_dir=system.settings.state_dir))
    # The caller's TRAINER_TEXT wins over the demo's model (e.g. a bigger one on a GPU).
    config = trainer.text if "text" in trainer.model_fields_set else demo_config(options.replay)
    stream = f"{MODEL}-{uuid.uuid4().hex[:8]}"
    with console.status("starting Kafka"):
        kafka = kafka_for_cli(system.settings)
    _define_stream(kafka, trainer.topics, stream)
    ours = TrainerSettings(state_dir=system.settings.state_dir, model_name=MODEL)
    ours.checkpoint_path.unlink(missing_ok=True)  # a fresh model every run
    with console.status("starting the services (the first run resolves the jars)"):
        specs = system.up(defaults=system_defaults(stream, config))
    registry = {s.name: s.address for s in specs}["registry"]
    result = TextDemoResult(options.duration_s, options.rate, stream, config, "a fresh model")
    result.first_version = _latest(registry) + 1
    return result


def _reuse(registry: str, options: Options) -> TextDemoResult:
    """Continue the running system's text model on the stream its latest version names.

    Raises:
        Conflict: no version of the model exists yet (its stream is unknown).

    """
    try:
        with RegistryClient(registry) as client:
            newest = client.get_version(MODEL)
    except StreamlearnError as exc:
        raise Conflict(
            f"the running system serves {MODEL!r} but no version of it answers ({exc}): "
            "run `streamlearn down` first, then `streamlearn demo --text`"
        ) from None
    try:
        config: TextModelConfig | None = TextModelConfig.model_validate_json(
            newest.lineage.config_json
        )
    except ValueError:
        config = None
    start = f"continuing v{newest.version} of the running system; --replay has no effect"
    result = TextDemoResult(options.duration_s, options.rate, newest.lineage.stream, config, start)
    result.first_version = int(newest.version) + 1
    return result


def _latest(registry: str) -> int:
    with RegistryClient(registry) as client:
        return latest_version(client, MODEL)


def _define_stream(kafka: KafkaSettings, topics: TopicSettings, stream: str) -> None:
    """The run's text stream, on the definitions topic the services read."""
    specs = [t for t in standard_topics(topics) if t.name == topics.streams]
    ensure_topics(AdminClient(kafka.client_config()), specs)
    definition = stream_pb2.StreamDefinition(
        name=stream, text=stream_pb2.TextSpec(max_bytes=TEXT_MAX_BYTES)
    )
    publish_definition(kafka, topics.streams, definition)


def _stream_texts(
    console: Console,
    kafka: KafkaSettings,
    topics: TopicSettings,
    address: dict[str, str],
    result: TextDemoResult,
) -> None:
    """Feed both domains while the dashboard runs; then let the trainer report it all."""
    total = int(result.rate * result.duration_s)
    domains = TwoDomains(switch_after=total // 2)
    producer = SampleProducer(kafka=kafka, topic=topics.raw, stream=result.stream)
    metrics = TrainerMetricsFollower(kafka, topics.metrics, MODEL)
    with (
        RegistryClient(address["registry"]) as registry,
        InferenceClient(address["inference"]) as inference,
    ):
        watch = TextWatch(metrics, registry, inference, result)
        try:
            watch.tick()  # what a running model reported before: the counts to add to
            baseline = result.snapshot.covered
            _feed(console, TextFeed(producer, domains, result.rate, total), result, watch)
            _settle(console, result, baseline + result.delivered)
        finally:
            watch.stop()
            producer.close()


def _feed(console: Console, feed: TextFeed, result: TextDemoResult, watch: TextWatch) -> None:
    """Send the texts while the dashboard runs; the feed's failure is raised here."""
    watch.start()
    started = time.monotonic()
    try:
        _live(console, feed.start(), result, started)
    finally:
        result.elapsed_s = time.monotonic() - started
        result.delivered = feed.stop()


def _live(console: Console, feed: TextFeed, result: TextDemoResult, started: float) -> None:
    """The dashboard, until the duration is over, the feed fails or Ctrl-C."""
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while time.monotonic() - started < result.duration_s and feed.error is None:
                result.progress = feed.progress
                live.update(dashboard(result, time.monotonic() - started))
                time.sleep(0.25)
            result.progress = feed.progress
    except KeyboardInterrupt:
        console.print("interrupted")


def _settle(console: Console, result: TextDemoResult, expected: int) -> None:
    """Wait (bounded) for a report that covers every text, and a sample of its version."""
    deadline = time.monotonic() + SETTLE_S
    with console.status("waiting for the trainer to learn the last texts"):
        while time.monotonic() < deadline:
            snapshot = result.snapshot
            covered = snapshot.covered >= expected
            sampled = result.served and all(
                s.version == result.served for s in snapshot.samples.values()
            )
            if covered and sampled and snapshot.served_version >= snapshot.latest_version:
                return
            time.sleep(0.25)
