"""A command group that imports a sub-command's module only when that sub-command runs.

`streamlearn --help` lists every command from the short help written here; importing the
modules behind them (gRPC stubs, numpy, Kafka clients, and for `replay` or `bench` torch,
ONNX Runtime and matplotlib) is left to the one command that is invoked.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command, get_group


@dataclass(frozen=True)
class Lazy:
    """Where a sub-command lives: a Typer app (a group) or a function (a command)."""

    module: str
    attribute: str
    help: str  # the one line `--help` lists; a unit test keeps it equal to the real one

    def load(self, name: str) -> Any:
        """The click command (or group) built from the imported module."""
        target = getattr(importlib.import_module(self.module), self.attribute)
        if isinstance(target, typer.Typer):
            group = get_group(target)
            group.name = name
            return group
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        return get_command(single)


class _Placeholder(TyperCommand):
    """Stands in for a sub-command in listings (help, completion) until it is resolved."""


class LazyGroup(TyperGroup):
    """A Typer group whose sub-commands in `lazy` are imported when resolved, not before."""

    lazy: dict[str, Lazy] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, entry in self.lazy.items():
            self.commands.setdefault(name, _Placeholder(name, help=entry.help))

    # `ctx` is typer's vendored click context; `Any` keeps the override compatible.
    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """Resolve as usual, then swap a placeholder for the imported command."""
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(command, _Placeholder):
            command = self.lazy[name].load(name)
            self.commands[name] = command
        return name, command, rest
