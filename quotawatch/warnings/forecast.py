"""Days until a mailbox is full, from its stored usage history (a robust Theil-Sen line fit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from statistics import median

WINDOW = timedelta(days=14)
MIN_SPAN = timedelta(days=1)
#: more points than this are reduced to this many time buckets (median of each) before fitting
MAX_POINTS = 96
#: a forecast further out than this is not worth a sentence
HORIZON_DAYS = 365.0


def _bucketed(points: list[tuple[float, float]], count: int) -> list[tuple[float, float]]:
    """At most ``count`` points: the median time and ratio of equal-width time buckets."""
    if len(points) <= count:
        return points
    start, end = points[0][0], points[-1][0]
    width = (end - start) / count
    buckets: dict[int, list[tuple[float, float]]] = {}
    for t, r in points:
        buckets.setdefault(min(count - 1, int((t - start) / width)), []).append((t, r))
    return [(median(t for t, _ in b), median(r for _, r in b)) for _, b in sorted(buckets.items())]


def slope_per_day(points: Sequence[tuple[float, float]]) -> float:
    """Theil-Sen estimator: the median of the slopes between all pairs of (day, ratio) points.

    A cleanup or a burst of mail moves a few pairs only, so one step does not tilt the line.
    """
    slopes = [
        (r2 - r1) / (t2 - t1)
        for i, (t1, r1) in enumerate(points)
        for t2, r2 in points[i + 1 :]
        if t2 != t1
    ]
    return median(slopes) if slopes else 0.0


def trend(
    history: Sequence[tuple[datetime, int, int]],
    now: datetime,
    window: timedelta = WINDOW,
) -> tuple[float, float] | None:
    """(current ratio, growth of the ratio per day) from (time, usage, limit) points; None when
    the last ``window`` holds fewer than two points or spans less than a day."""
    since = now - window
    recent = sorted((t, u, lim) for t, u, lim in history if since <= t <= now and lim > 0)
    if len(recent) < 2 or recent[-1][0] - recent[0][0] < MIN_SPAN:
        return None
    origin = recent[0][0]
    points = [((t - origin) / timedelta(days=1), u / lim) for t, u, lim in recent]
    return points[-1][1], slope_per_day(_bucketed(points, MAX_POINTS))


def days_until_full(
    history: Sequence[tuple[datetime, int, int]],
    now: datetime,
    window: timedelta = WINDOW,
) -> float | None:
    """Days until usage reaches the limit at the current rate, from (time, usage, limit) points.

    None when the last ``window`` holds fewer than two points or spans less than a day, when
    usage is flat or falling, or when full is more than a year away. 0 when already full.
    """
    found = trend(history, now, window)
    if found is None:
        return None
    current, slope = found
    if current >= 1:
        return 0.0
    if slope <= 0:
        return None
    days = (1 - current) / slope
    return days if days <= HORIZON_DAYS else None
