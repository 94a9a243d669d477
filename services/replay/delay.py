"""Label delays of a replay: a fixed duration, or each record's recorded delay.

Light on purpose (no torch, no Kafka): the CLI parses `--label-delay` with it before it
asks the broker anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import InvalidArgument

RECORDED = "recorded"
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|s|m|h)?")
# A year: longer is a typo, and int64 milliseconds must not overflow when times are added.
MAX_DELAY_MS = 366 * 24 * 3_600_000
_EXPECTED = "expected a duration such as 30s, 5m, 2h, 250ms or plain seconds, or 'recorded'"


@dataclass(frozen=True)
class LabelDelay:
    """How long an event's label takes to arrive after the event.

    `ms`: the same delay for every event; `recorded`: each record's own delay, from the
    sample attribute the joiner writes (`services.joiner.outputs.LABEL_DELAY_MS`; a record
    without it has none).
    """

    ms: int = 0
    recorded: bool = False

    def describe(self) -> str:
        """`recorded`, or the delay in the largest unit that writes it whole (e.g. `30s`)."""
        if self.recorded:
            return RECORDED
        for unit in ("h", "m", "s"):
            if self.ms and self.ms % _UNITS_MS[unit] == 0:
                return f"{self.ms // _UNITS_MS[unit]}{unit}"
        return f"{self.ms}ms"


def parse_delay(text: str) -> LabelDelay:
    """`recorded`, or a duration (`parse_duration`), as a `LabelDelay`.

    Raises:
        InvalidArgument: `text` is neither.

    """
    if text.strip().lower() == RECORDED:
        return LabelDelay(recorded=True)
    return LabelDelay(ms=parse_duration(text))


def parse_duration(text: str) -> int:
    """Milliseconds of "30s", "5m", "2h", "250ms" or plain seconds ("1.5"), rounded to 1 ms.

    Raises:
        InvalidArgument: not one of those, negative, or longer than a year.

    """
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise InvalidArgument(f"--label-delay {text!r}: {_EXPECTED}")
    scale = _UNITS_MS[found["unit"] or "s"]
    number = found["number"]
    if len(number) > 20:  # digits enough for any delay below the limit: no huge floats
        raise InvalidArgument(f"--label-delay {text!r}: longer than a year")
    ms = round(float(number) * scale)
    if ms > MAX_DELAY_MS:
        raise InvalidArgument(f"--label-delay {text!r}: longer than a year")
    return ms
