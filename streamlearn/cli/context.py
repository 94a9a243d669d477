"""The settings object built once per CLI invocation and handed to sub-commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from streamlearn.cli.settings import CliSettings


def settings_of(ctx: typer.Context) -> CliSettings:
    """The CliSettings of this invocation, read from the environment on first use.

    Built here rather than in the root callback: `--help` of a sub-command then never
    loads pydantic-settings.
    """
    from streamlearn.cli.settings import CliSettings

    root = ctx.find_root()
    if root.obj is None:
        root.obj = CliSettings()
    if not isinstance(root.obj, CliSettings):
        raise RuntimeError("CLI settings were not initialised")
    return root.obj
