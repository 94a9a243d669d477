"""`streamlearn generate MODEL PROMPT`: continue a prompt with a served language model.

The continuation is written to stdout as raw bytes while the server streams it (the model
is byte-level: a piece may end inside a UTF-8 character, which the next piece completes).
Only typer is imported to list and parse the command: the gRPC client, numpy and the
settings come when it runs.
"""

from __future__ import annotations

import typer

from streamlearn.cli.context import settings_of

DEFAULT_INFERENCE = "127.0.0.1:8001"


def generate(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The served language model."),
    prompt: str = typer.Argument(..., help="The text to continue (sent as UTF-8)."),
    max_new_bytes: int = typer.Option(
        128, min=1, help="Bytes to generate (at most the server's INFERENCE_MAX_NEW_BYTES)."
    ),
    sample: bool = typer.Option(
        False, "--sample/--greedy", help="Sample each byte, or take the most probable one."
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature (> 0)."),
    top_k: int = typer.Option(0, min=0, max=256, help="Sample among the top K bytes (0: all)."),
    seed: int = typer.Option(0, min=0, help="The sampler's seed: the same seed, the same bytes."),
    chunk_bytes: int = typer.Option(16, min=1, help="Bytes per streamed piece."),
    version: int = typer.Option(0, min=0, help="A loaded version (0: the one served)."),
    address: str = typer.Option(
        "",
        help="The inference server (default: STREAMLEARN_INFERENCE_ADDRESS, else "
        f"{DEFAULT_INFERENCE}).",
    ),
    timeout: float = typer.Option(120.0, min=0.1, help="Seconds the whole generation may take."),
) -> None:
    """Continue a prompt with a served language model, streamed to stdout."""
    from streamlearn.cli.reach import needs
    from streamlearn.client.inference import InferenceClient

    security = settings_of(ctx).grpc_security()
    target = address or _inference_address()
    out = typer.get_binary_stream("stdout")
    with (
        needs("inference", target, security),
        InferenceClient(target, timeout=timeout, security=security) as client,
    ):
        pieces = client.generate_stream(
            model,
            prompt,
            max_new_bytes,
            sampling="sample" if sample else "greedy",
            temperature=temperature,
            top_k=top_k,
            seed=seed,
            chunk_bytes=chunk_bytes,
            version=version,
        )
        for piece in pieces:
            out.write(piece)
            out.flush()  # each piece as it arrives
    if out.isatty():
        out.write(b"\n")


def _inference_address() -> str:
    """STREAMLEARN_INFERENCE_ADDRESS, else the default; read only when the command runs."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class InferenceTarget(BaseSettings):
        """Where the CLI reaches the inference server (env prefix `STREAMLEARN_`)."""

        model_config = SettingsConfigDict(env_prefix="STREAMLEARN_", frozen=True, extra="ignore")

        inference_address: str = DEFAULT_INFERENCE

    return InferenceTarget().inference_address
