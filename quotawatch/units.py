"""Parsing and formatting of sizes, durations and percentages used in the config and output."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, ValidationError
from pydantic import ByteSize as _PydanticByteSize

_BYTE_SIZE = TypeAdapter(_PydanticByteSize)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_size(value: object) -> int:
    """Parse ``500MB``, ``1.5GiB``, ``2048`` or an int into bytes (KB=1000, KiB=1024), with
    pydantic's ByteSize rules and a message that says what is expected."""
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError(f"expected a size such as 500MB or 2GiB, got {value!r}")
    try:
        return int(_BYTE_SIZE.validate_python(value))
    except ValidationError:
        raise ValueError(f"expected a size such as 500MB or 2GiB, got {value!r}") from None


def parse_duration(value: object) -> timedelta:
    """Parse ``30d``, ``1h30m``, ``90s``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30d, 12h or 15m")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        pos = 0
        total = 0.0
        for m in _DURATION_RE.finditer(text):
            if text[pos : m.start()].strip():
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
            pos = m.end()
        else:
            if pos and not text[pos:].strip():
                return timedelta(seconds=total)
    raise ValueError(f"expected a duration such as 30d, 12h or 15m, got {value!r}")


def parse_percent(value: object) -> float:
    """Parse ``"90%"`` (0 % to 100 %) or a fraction ``0.9`` (0 to 1) into a fraction.

    A bare number above 1 is refused rather than guessed: ``2`` could mean 2 % or 200 %, and
    ``1`` would be 100 % while ``2`` was 2 %. The message names the accepted forms.
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        number, scale = value.strip()[:-1].strip(), 100.0
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        number, scale = str(value).strip(), 1.0
    else:
        number, scale = "", 1.0
    try:
        result = float(number) / scale
    except ValueError:
        result = math.nan
    if not 0 <= result <= 1:  # also NaN and infinity
        raise ValueError(
            f'expected a percentage such as "90%" or a fraction from 0 to 1 such as 0.9, '
            f"got {value!r}"
        )
    return result


def format_size(num: float) -> str:
    """Human size with binary units: ``1.5 MiB``."""
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(delta: timedelta) -> str:
    """Shortest readable form: ``30d``, ``15m``, ``1h30m``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS.items():
        if unit == "w" and seconds % size:
            continue
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_percent(ratio: float | None) -> str:
    """``87.5 %``, ``80 %`` or ``-`` when unknown: one decimal, rounded down (79.96 % never shows
    as a threshold of 80 % reached), the same in tables, notes and mails."""
    if ratio is None:
        return "-"
    whole, tenth = divmod(math.floor(ratio * 1000 + 1e-6), 10)
    return f"{whole} %" if tenth == 0 else f"{whole}.{tenth} %"


ByteSize = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
Percent = Annotated[float, BeforeValidator(parse_percent)]
