from __future__ import annotations

import io
import json
import logging

from shared.logs import configure_logging


def test_json_lines_carry_extras_and_exceptions() -> None:
    stream = io.StringIO()
    configure_logging("trainer", "INFO", stream=stream)
    log = logging.getLogger("t")
    log.debug("hidden")
    log.info("applied", extra={"topic": "t", "partition": 2, "offset": 41, "model_version": 7})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["service"] == "trainer" and first["message"] == "applied"
    assert (first["topic"], first["partition"], first["offset"], first["model_version"]) == (
        "t",
        2,
        41,
        7,
    )
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]
