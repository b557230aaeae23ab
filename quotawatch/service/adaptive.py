"""Adaptive check intervals: sooner near a warning level and when growing fast, later (up to max_interval) when far and slow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

#: growth is assumed up to this many times faster than measured
SAFETY = 2.0


def next_delay(
    ratio: float | None,
    growth_per_day: float | None,
    levels: Sequence[float],
    interval: timedelta,
    max_interval: timedelta,
    safety: float = SAFETY,
) -> timedelta:
    """The delay until an account's next check.

    ``levels`` are the usage ratios whose crossing must be noticed (the warning thresholds and
    1.0 = full). Guarantee: if usage grows at most ``safety`` times the measured rate, a level
    crossed before the next check was crossed at most ``interval`` before it, as with a fixed
    interval. Unknown usage or growth keeps the fixed ``interval``; usage that does not grow,
    or is above every level, waits ``max_interval`` or ``interval`` respectively.
    """
    if ratio is None or growth_per_day is None:
        return interval
    ahead = [level for level in levels if level > ratio]
    if not ahead:
        return interval
    if growth_per_day <= 0:
        return max(interval, max_interval)
    days_to_cross = (min(ahead) - ratio) / (growth_per_day * safety)
    delay = timedelta(days=days_to_cross) + interval
    return max(interval, min(delay, max_interval))


def warning_levels(ratios: Sequence[float], free_bytes: Sequence[int], limit: int) -> list[float]:
    """The levels of an account: ratio thresholds, free-space thresholds at its limit, and full."""
    levels = [*ratios, 1.0]
    if limit > 0:
        levels += [1 - free / limit for free in free_bytes if free < limit]
    return sorted(set(levels))
