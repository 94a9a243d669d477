"""What the deployment tests check manifests against: the services' settings classes."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(
    p.name for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "settings.py").exists()
)


def settings_class(service: str) -> type[ServiceSettings]:
    """The one ServiceSettings subclass of services/<service>/settings.py."""
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, ServiceSettings) and c is not ServiceSettings
    ]
    assert len(found) == 1, f"services/{service}/settings.py must define one settings class"
    return found[0]


def resolves(model: type[BaseModel], name: str) -> bool:
    """True when `name` (lower case, nested with `__`) is a field path of `model`."""
    head, _, rest = name.partition("__")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    annotation: Any = field.annotation
    return (
        inspect.isclass(annotation)
        and issubclass(annotation, BaseModel)
        and resolves(annotation, rest)
    )


def setting_of(env_name: str) -> tuple[str, type[ServiceSettings], str]:
    """(service, settings class, field path) an env variable such as TRAINER_KAFKA__X sets."""
    service = env_name.split("_", 1)[0].lower()
    assert service in SERVICES, f"{env_name}: no service prefix"
    cls = settings_class(service)
    path = env_name.removeprefix(cls.model_config["env_prefix"]).lower()
    assert resolves(cls, path), f"{env_name}: {cls.__name__} has no setting {path!r}"
    return service, cls, path
