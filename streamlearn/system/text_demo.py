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
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

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
from streamlearn.system.grammars import PROMPTS, TwoDomains
from streamlearn.system.summary import sparkline
from streamlearn.system.watch import TrainerMetricsFollower, latest_version, rate_between
from streamlearn.v1 import metrics_pb2, stream_pb2

MODEL = "demo-text"
TEXT_MAX_BYTES = 256  # the stream's limit: the grammars write at most 160 bytes
UNIFORM_BITS = 8.0  # bits per byte of a uniform guess over 256 values: the sparkline's top
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


# -- what the dashboard and the summary show ----------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A served version's greedy continuation of a prompt, made printable."""

    version: int
    prompt: str
    text: str


@dataclass
class TextSnapshot:
    """The latest of what the watch saw (this run's stream only)."""

    trainer: metrics_pb2.TrainerMetrics = field(default_factory=metrics_pb2.TrainerMetrics)
    learned_per_s: float = 0.0
    windows: list[float] = field(default_factory=list)  # window bits per byte, per report
    latest_version: int = 0
    served_version: int = 0
    samples: dict[str, Sample] = field(default_factory=dict)  # by domain

    @property
    def first_window(self) -> float | None:
        """The window bits per byte of the first report seen (None: none yet)."""
        return self.windows[0] if self.windows else None

    @property
    def covered(self) -> int:
        """Texts the trainer has reported on: learned, held out or skipped."""
        held = int(self.trainer.metrics.get("held_out", 0.0))
        return int(self.trainer.events_applied + self.trainer.events_skipped) + held


@dataclass(frozen=True)
class FeedProgress:
    """Where the feed is: texts sent, the domain now, when it switched (s since start)."""

    sent: int
    domain: str
    switched_at: float | None = None


@dataclass
class TextDemoResult:
    """The run's settings and what it saw."""

    duration_s: float
    rate: float
    stream: str
    config: TextModelConfig | None  # None: a running system's, unreadable
    start: str = ""  # what the model starts from
    first_version: int = 1  # the first version number this run can register
    elapsed_s: float = 0.0
    delivered: int = 0
    progress: FeedProgress = field(default_factory=lambda: FeedProgress(0, ""))
    snapshot: TextSnapshot = field(default_factory=TextSnapshot)

    @property
    def served(self) -> int:
        """The version of this run served last (0: none was)."""
        served = self.snapshot.served_version
        return served if served >= self.first_version else 0


def take_report(snapshot: TextSnapshot, report: metrics_pb2.TrainerMetrics, stream: str) -> bool:
    """Add a trainer metrics report of `stream` that is new; False if it is neither."""
    if report.stream != stream or report.time == snapshot.trainer.time:
        return False
    rate = rate_between(snapshot.trainer, report)
    if rate is not None:
        snapshot.learned_per_s = rate
    snapshot.trainer = report
    if "window_bits_per_byte" in report.metrics:
        snapshot.windows.append(report.metrics["window_bits_per_byte"])
    return True


def printable(data: bytes) -> str:
    """Generated bytes as one line: invalid UTF-8 and control characters shown as `·`."""
    return "".join(c if c.isprintable() else "·" for c in data.decode(errors="replace"))


def domains_seen(scores: Mapping[str, float]) -> list[str]:
    """The domains a report scores held-out texts of, sorted."""
    prefix = "domain_bits_per_byte."
    return sorted(k[len(prefix) :] for k in scores if k.startswith(prefix))


def domain_text(scores: Mapping[str, float], domain: str) -> str:
    """Held-out bits per byte of `domain` now, its best, and its forgetting (now - best)."""
    now = scores.get(f"domain_bits_per_byte.{domain}")
    if now is None:
        return "-"
    forgot = scores.get(f"forgetting.{domain}", 0.0)
    return f"{now:.2f} bits per byte now, best {now - forgot:.2f}: forgetting {forgot:+.2f}"


def transfer_text(scores: Mapping[str, float]) -> str:
    """The backward transfer, and what its sign means."""
    transfer = scores.get("backward_transfer")
    if transfer is None:
        return "- (no domain left behind yet)"
    meaning = "forgotten" if transfer < 0 else "kept or improved"
    return f"{transfer:+.2f} bits per byte (the domain left behind: {meaning})"


def model_text(result: TextDemoResult) -> str:
    """The model's shape and replay, and what it starts from."""
    config = result.config
    shape = (
        f"{MODEL}: {config.layers} layers x {config.width}, context {config.context} bytes, "
        f"replay_ratio {config.replay_ratio:g}"
        if config is not None
        else MODEL
    )
    return f"{shape} ({result.start})" if result.start else shape


def _learned(trainer: metrics_pb2.TrainerMetrics) -> str:
    held = int(trainer.metrics.get("held_out", 0.0))
    return (
        f"{trainer.events_applied:,} events, {held:,} held out, {trainer.events_skipped:,} skipped"
    )


def _window_text(snapshot: TextSnapshot) -> str:
    scores = snapshot.trainer.metrics
    if not snapshot.windows:
        return "waiting for the trainer's first report"
    first = snapshot.first_window or 0.0
    line = f"window {snapshot.windows[-1]:.2f} (first report {first:.2f})"
    if "bits_per_byte" in scores:
        line += f", whole run {scores['bits_per_byte']:.2f}"
    return line


def _domain_now(progress: FeedProgress, switch_after_s: float) -> str:
    if progress.switched_at is None:
        return f"{progress.domain or '-'} (switches at {switch_after_s:.0f}s)"
    return f"{progress.domain} (switched at {progress.switched_at:.1f}s)"


def _sample_rows(table: Table, result: TextDemoResult) -> None:
    samples = result.snapshot.samples
    for domain, prompt in PROMPTS.items():
        sample = samples.get(domain)
        shown = (
            f"[dim]{escape(prompt)}[/]{escape(sample.text)}  [dim](v{sample.version})[/]"
            if sample is not None
            else "[dim]waiting for a version of this run[/]"
        )
        table.add_row(f"sample {prompt!r}", shown)


def dashboard(result: TextDemoResult, elapsed: float) -> Table:
    """One refresh of the live view."""
    snapshot, progress = result.snapshot, result.progress
    switch_after_s = result.duration_s / 2
    table = Table(
        title=f"streamlearn demo --text — {elapsed:.0f}s of {result.duration_s:.0f}s "
        f"(the domain switches at {switch_after_s:.0f}s; Ctrl-C ends it)",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", model_text(result))
    table.add_row("domain", _domain_now(progress, switch_after_s))
    table.add_row("sent", f"{progress.sent:,} texts ({progress.sent / max(elapsed, 1e-9):,.0f}/s)")
    table.add_row("learned", f"{_learned(snapshot.trainer)} ({snapshot.learned_per_s:,.0f}/s)")
    table.add_row("bits per byte", _window_text(snapshot))
    table.add_row("", sparkline([min(w / UNIFORM_BITS, 1.0) for w in snapshot.windows]))
    for domain in domains_seen(snapshot.trainer.metrics):
        table.add_row(f"held out: {domain}", domain_text(snapshot.trainer.metrics, domain))
    table.add_row("backward transfer", transfer_text(snapshot.trainer.metrics))
    served = f"v{result.served}" if result.served else "none of this run yet"
    table.add_row("versions", f"registered up to v{snapshot.latest_version}, served {served}")
    _sample_rows(table, result)
    return table


def summary(result: TextDemoResult) -> Table:
    """The closing table: bits per byte at the start and the end, per domain, a sample."""
    snapshot = result.snapshot
    scores = snapshot.trainer.metrics
    table = Table(title="streamlearn demo --text: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rate = result.delivered / max(result.elapsed_s, 1e-9)
    table.add_row(
        "texts delivered", f"{result.delivered:,} in {result.elapsed_s:.0f}s ({rate:,.0f}/s)"
    )
    table.add_row("model", model_text(result))
    table.add_row("learned", _learned(snapshot.trainer))
    if snapshot.windows:
        table.add_row(
            "bits per byte (window)",
            f"{snapshot.windows[0]:.2f} at the first report -> {snapshot.windows[-1]:.2f} "
            "at the end (8 = a uniform guess)",
        )
    switched = result.progress.switched_at
    table.add_row(
        "domains",
        f"switched to {result.progress.domain} at {switched:.1f}s"
        if switched is not None
        else "no switch within the run",
    )
    for domain in domains_seen(scores):
        table.add_row(f"held out: {domain}", domain_text(scores, domain))
    table.add_row("backward transfer", transfer_text(scores))
    if not result.served:
        table.add_row("served", "[red]no version of this run was ever served[/]")
    else:
        table.add_row(
            "versions", f"v{result.first_version} and later this run; v{result.served} served"
        )
        _sample_rows(table, result)
    table.add_row("compare", _compare_text(result.config))
    return table


def _compare_text(config: TextModelConfig | None) -> str:
    if config is None or not config.replay_ratio:
        return "no replay here: run again with --replay 1 to compare the forgetting"
    return (
        f"replay_ratio {config.replay_ratio:g} here: run again without --replay to compare "
        "the forgetting"
    )


# -- the traffic and the watch ------------------------------------------------------------


class TextFeed:
    """Sends `total` texts of `domains` at `rate`/s, in bursts of 50 ms, on its own thread."""

    def __init__(
        self, producer: SampleProducer, domains: TwoDomains, rate: float, total: int
    ) -> None:
        self._producer, self._domains = producer, domains
        self._rate, self.total = rate, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="text-feed", daemon=True)
        self._started = time.monotonic()
        self.progress = FeedProgress(0, domains.domain_at(0))
        self.error: Exception | None = None

    def start(self) -> TextFeed:
        """Begin sending."""
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop, wait for every acknowledgement; returns the texts delivered."""
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self._producer.flush()

    def _run(self) -> None:
        burst = max(1, int(self._rate / 20))
        try:
            for n, (domain, text) in enumerate(islice(self._domains.texts(), self.total)):
                if self._stop.is_set():
                    return
                self._producer.send(
                    {"key": f"text-{n % KEYS}", "text": text, "attributes": {"domain": domain}}
                )
                self._advance(domain)
                if self.progress.sent % burst == 0 and self._pace():
                    return
        except Exception as exc:  # surfaced by stop()
            self.error = exc

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
