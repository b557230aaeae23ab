from datetime import timedelta

import pytest

from quotawatch.units import (
    format_duration,
    format_percent,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500MB", 500_000_000), ("1.5GiB", 1610612736), ("2048", 2048), (10, 10), ("10 KiB", 10240)],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "-1MB", "12XB", True, -5, None])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(weeks=2)),
        (60, timedelta(seconds=60)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "30", "d", "30x", "1h junk", True])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_percent() -> None:
    assert parse_percent("90%") == pytest.approx(0.9)
    assert parse_percent(0.8) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        parse_percent(85)  # 85 % or 8500 %? refused, not guessed
    with pytest.raises(ValueError):
        parse_percent("120%")
    with pytest.raises(ValueError):
        parse_percent("lots")


def test_formatting() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(5 * 1024**3) == "5.0 GiB"
    assert format_duration(timedelta(days=30)) == "30d"
    assert format_duration(timedelta(days=14)) == "2w"
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_percent(0.875) == "87.5 %"
    assert format_percent(0.7999) == "79.9 %" and format_percent(0.8) == "80 %"
    assert format_percent(None) == "-"
