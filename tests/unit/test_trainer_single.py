"""One trainer per model: a consumer group per model, a second instance refused."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.trainer import checkpoint
from services.trainer.settings import TrainerSettings
from services.trainer.single import Member, group_members, others, refuse_if_shared
from shared.errors import Conflict, Unavailable
from tests.unit.test_trainer_hardening import ScriptedConsumer, make_loop, partitions_of, singles


def test_each_model_has_its_own_consumer_group() -> None:
    first, second = TrainerSettings(model_name="fraud"), TrainerSettings(model_name="churn")
    assert first.consumer_group == "streamlearn-trainer-fraud"
    assert second.consumer_group == "streamlearn-trainer-churn"
    assert TrainerSettings().consumer_group == "streamlearn-trainer-demo"
    assert TrainerSettings(model_name="x", consumer_group="mine").consumer_group == "mine"


def test_the_group_follows_the_model_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAINER_MODEL_NAME", "fraud")
    assert TrainerSettings().consumer_group == "streamlearn-trainer-fraud"
    monkeypatch.setenv("TRAINER_CONSUMER_GROUP", "custom")
    assert TrainerSettings().consumer_group == "custom"


ME = Member("trainer-0", "streamlearn-trainer-trainer-0", "/10.0.0.1")
OTHER = Member("trainer-1", "streamlearn-trainer-trainer-1", "/10.0.0.2")
DYNAMIC = Member(None, "rdkafka", "/10.0.0.3")


def test_alone_or_with_its_own_previous_member_a_trainer_runs() -> None:
    refuse_if_shared([], "g", "demo", "trainer-0")
    refuse_if_shared([ME], "g", "demo", "trainer-0")  # a restart of the same instance
    assert others([ME, OTHER, DYNAMIC], "trainer-0") == [OTHER, DYNAMIC]


@pytest.mark.parametrize("member", [OTHER, DYNAMIC])
def test_another_member_in_the_models_group_refuses_the_trainer(member: Member) -> None:
    with pytest.raises(Conflict) as refused:
        refuse_if_shared([ME, member], "streamlearn-trainer-demo", "demo", "trainer-0")
    message = str(refused.value)
    assert "'demo'" in message and "streamlearn-trainer-demo" in message
    assert member.host in message and "second instance" in message


@dataclass
class FakeAdmin:
    """Answers with `errors` first (one per call), then with `members`."""

    members: list[Any] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    calls: int = 0

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, Future[Any]]:
        self.calls += 1
        future: Future[Any] = Future()
        if self.errors:
            future.set_exception(self.errors.pop(0))
        else:
            future.set_result(type("Description", (), {"members": self.members}))
        return {groups[0]: future}


def kafka_error(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


@dataclass
class Described:
    member_id: str
    client_id: str
    host: str
    group_instance_id: str | None


def test_members_as_the_admin_client_describes_them() -> None:
    admin = FakeAdmin([Described("m1", "c", "/h", "trainer-1"), Described("m2", "d", "/i", "")])
    assert group_members(admin, "g") == [Member("trainer-1", "c", "/h"), Member(None, "d", "/i")]
    with pytest.raises(Unavailable, match="'g'"):
        group_members(FakeAdmin(errors=[kafka_error(KafkaError.GROUP_AUTHORIZATION_FAILED)]), "g")
    assert group_members(FakeAdmin(errors=[kafka_error(KafkaError.GROUP_ID_NOT_FOUND)]), "g") == []


def test_a_coordinator_still_loading_is_waited_for() -> None:
    moving = [
        kafka_error(KafkaError.NOT_COORDINATOR),
        kafka_error(KafkaError.COORDINATOR_LOAD_IN_PROGRESS),
    ]
    admin = FakeAdmin([Described("m1", "c", "/h", "trainer-1")], moving)
    assert group_members(admin, "g", pause=0.01) == [Member("trainer-1", "c", "/h")]
    assert admin.calls == 3
    never = FakeAdmin(errors=[kafka_error(KafkaError.NOT_COORDINATOR)] * 1000)
    with pytest.raises(Unavailable, match="NOT_COORDINATOR"):
        group_members(never, "g", timeout=0.05, pause=0.01)


def test_another_trainer_found_at_the_first_assignment_stops_without_checkpointing(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    consumer = ScriptedConsumer(partitions_of(singles(20)), stop)
    loop = make_loop(consumer, tmp_path / "c.ckpt")
    calls = []

    def alone() -> None:
        calls.append(1)
        refuse_if_shared([ME, OTHER], "g", "demo", "trainer-0")

    loop._alone = alone
    with pytest.raises(Conflict):
        loop.run(stop)
    assert calls == [1] and loop.learner.applied == 0 and consumer.closed
    assert checkpoint.load(tmp_path / "c.ckpt") is None


def test_a_trainer_alone_at_its_first_assignment_checks_only_once(tmp_path: Path) -> None:
    stop = threading.Event()
    consumer = ScriptedConsumer(
        partitions_of(singles(30)), stop, hooks={4: lambda c: c.rebalance()}
    )
    loop = make_loop(consumer, tmp_path / "c.ckpt")
    calls = []
    loop._alone = lambda: calls.append(1)
    loop.run(stop)
    assert calls == [1] and loop.learner.applied == 30


def test_trainer_ids_default_to_this_host_and_state_dir(tmp_path: Path) -> None:
    first = TrainerSettings(state_dir=tmp_path / "a").trainer_id
    assert first == TrainerSettings(state_dir=tmp_path / "a").trainer_id  # a restart keeps it
    assert first != TrainerSettings(state_dir=tmp_path / "b").trainer_id  # another instance
    assert TrainerSettings(state_dir=tmp_path / "a", trainer_id="pod-0").trainer_id == "pod-0"
