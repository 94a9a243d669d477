"""Which versions are loaded and which one is served, swapped atomically."""

from __future__ import annotations

import threading
from collections import OrderedDict

from services.inference.model import LoadedModel
from shared.errors import NotFound, Unavailable


class ServedModel:
    """The served version of one model plus a few recent ones clients may still ask for.

    Swapping replaces one reference: a request that already took the old LoadedModel runs to
    completion on it, and the old session is freed when the last such request ends.
    """

    def __init__(self, name: str, keep_loaded: int = 3) -> None:
        self.name = name
        self.current: LoadedModel | None = None
        self._keep = keep_loaded
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def swap(self, model: LoadedModel) -> int:
        """Serve `model` from now on; returns the version served before (0 if none)."""
        with self._lock:
            previous = self.current.version if self.current else 0
            self._loaded[model.version] = model
            self._loaded.move_to_end(model.version)
            self.current = model
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
            return previous

    def get(self, version: int = 0) -> LoadedModel:
        """The served version, or a specific loaded one."""
        current = self.current
        if version == 0:
            if current is None:
                raise Unavailable(f"model {self.name!r} has no version loaded yet")
            return current
        with self._lock:
            found = self._loaded.get(version)
        if found is None:
            raise NotFound(
                f"version {version} of {self.name!r} is not loaded; "
                f"loaded: {self.versions() or 'none'}"
            )
        return found

    def versions(self) -> list[int]:
        """Loaded version numbers, oldest first."""
        with self._lock:
            return list(self._loaded)


class Repository:
    """Served models by name."""

    def __init__(self, names: list[str], keep_loaded: int = 3) -> None:
        self._models = {name: ServedModel(name, keep_loaded) for name in names}

    def model(self, name: str) -> ServedModel:
        """A served model; NotFound for names this server does not serve."""
        try:
            return self._models[name]
        except KeyError:
            raise NotFound(f"unknown model {name!r}; served: {sorted(self._models)}") from None

    def all(self) -> list[ServedModel]:
        """Every served model."""
        return list(self._models.values())

    def ready(self) -> bool:
        """True when every model has a version loaded."""
        return all(m.current is not None for m in self._models.values())
