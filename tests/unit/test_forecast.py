"""Days until full from usage history: robust to single jumps, silent when history is short or falling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quotawatch.warnings.forecast import days_until_full, slope_per_day

NOW = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)
LIMIT = 1000


def series(
    ratios: list[float], step: timedelta = timedelta(hours=6)
) -> list[tuple[datetime, int, int]]:
    """Points ending at NOW, ``step`` apart."""
    start = NOW - step * (len(ratios) - 1)
    return [(start + i * step, round(r * LIMIT), LIMIT) for i, r in enumerate(ratios)]


def test_steady_growth_gives_days_until_full() -> None:
    # 1% per day for 10 days, now at 80% -> 20 days left
    history = series([0.70 + 0.01 * d for d in range(11)], step=timedelta(days=1))
    assert days_until_full(history, NOW) == pytest.approx(20, abs=0.01)


def test_a_single_cleanup_drop_does_not_tilt_the_line() -> None:
    ratios = [0.60 + 0.01 * d for d in range(14)]
    ratios[5] -= 0.3  # one odd reading (e.g. a cleanup, later refilled by a restore)
    history = series(ratios, step=timedelta(days=1))
    days = days_until_full(history, NOW)
    assert days is not None and days == pytest.approx((1 - ratios[-1]) / 0.01, rel=0.05)


@pytest.mark.parametrize(
    "history",
    [
        [],
        series([0.8]),
        series([0.80, 0.81, 0.82], step=timedelta(hours=2)),  # spans less than a day
    ],
)
def test_too_short_history_gives_none(history: list[tuple[datetime, int, int]]) -> None:
    assert days_until_full(history, NOW) is None


def test_flat_or_falling_usage_gives_none() -> None:
    assert days_until_full(series([0.8] * 10, step=timedelta(days=1)), NOW) is None
    falling = series([0.9 - 0.01 * d for d in range(10)], step=timedelta(days=1))
    assert days_until_full(falling, NOW) is None


def test_old_points_outside_the_window_are_ignored() -> None:
    old = series([0.1, 0.2], step=timedelta(days=1))
    old = [(t - timedelta(days=60), u, lim) for t, u, lim in old]
    assert days_until_full(old + series([0.8], step=timedelta(days=1)), NOW) is None


def test_full_already_is_zero_and_far_future_is_none() -> None:
    assert days_until_full(series([0.99, 1.02], step=timedelta(days=1)), NOW) == 0.0
    slow = series([0.5 + 0.0001 * d for d in range(10)], step=timedelta(days=1))
    assert days_until_full(slow, NOW) is None  # thousands of days away


def test_many_points_are_bucketed_and_still_fit() -> None:
    # every 15 minutes for 14 days: 1344 points, 2% per day from 50%
    step = timedelta(minutes=15)
    n = 14 * 96
    ratios = [0.5 + 0.02 * (i * step / timedelta(days=1)) for i in range(n)]
    days = days_until_full(series(ratios, step=step), NOW)
    assert days == pytest.approx((1 - ratios[-1]) / 0.02, rel=0.02)


def test_limit_change_is_handled_as_ratios() -> None:
    day = timedelta(days=1)
    history = [(NOW - 2 * day, 400, 1000), (NOW - day, 450, 1000), (NOW, 1000, 2000)]
    # ratios 0.40, 0.45, 0.50 -> 5% per day, 10 days left
    assert days_until_full(history, NOW) == pytest.approx(10)


def test_slope_of_identical_times_is_zero() -> None:
    assert slope_per_day([(1.0, 0.5), (1.0, 0.6)]) == 0.0
