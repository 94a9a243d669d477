"""The settings object built once per CLI invocation and handed to sub-commands."""

from __future__ import annotations

import typer

from streamlearn.cli.settings import CliSettings


def settings_of(ctx: typer.Context) -> CliSettings:
    """The CliSettings stored on the root context by the main callback."""
    settings = ctx.find_root().obj
    if not isinstance(settings, CliSettings):
        raise RuntimeError("CLI settings were not initialised")
    return settings
