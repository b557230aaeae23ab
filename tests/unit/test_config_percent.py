"""Percentages cannot be misread: "N%" or a fraction from 0 to 1, anything else names the field."""

from __future__ import annotations

import pytest

from quotawatch.config import parse_config
from quotawatch.errors import ConfigError
from quotawatch.units import parse_percent


def _account(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "alice",
        "host": "mail.example.org",
        "username": "alice",
        "password_file": "/etc/quotawatch/alice",
    }
    base.update(kw)
    return base


def _problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "qw.yaml")
    return info.value.lines()


@pytest.mark.parametrize(
    ("given", "fraction"),
    [("90%", 0.9), ("1.5%", 0.015), ("100%", 1.0), ("0%", 0.0), (0.8, 0.8), (1, 1.0), (0, 0.0),
     ("0.25", 0.25), (" 75 % ", 0.75)],
)  # fmt: skip
def test_accepted_forms(given: object, fraction: float) -> None:
    assert parse_percent(given) == pytest.approx(fraction)


@pytest.mark.parametrize("bad", [2, 1.5, 85, 100, "2", "1.5", "120%", "-1%", -0.1, "lots", "", True,
                                 None, "nan", "inf", float("nan"), "50%%"])  # fmt: skip
def test_everything_else_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="percentage"):
        parse_percent(bad)


def test_max_delete_fraction_2_is_an_error_naming_the_field() -> None:
    """``2`` used to mean 2 % and ``1`` 100 %: now ``2`` and ``1.5`` are refused by name."""
    lines = _problems({"accounts": [_account(max_delete_fraction=2)]})
    assert len(lines) == 1 and lines[0].startswith("qw.yaml: accounts[0].max_delete_fraction:")
    assert parse_config({"accounts": [_account(max_delete_fraction=1)]}).accounts[
        0
    ].max_delete_fraction == pytest.approx(1.0)


def test_every_percent_field_refuses_numbers_above_one() -> None:
    lines = _problems(
        {
            "accounts": [_account(rules=["big"])],
            "rules": {
                "big": {"folders": ["\\Trash"], "when_above": 90, "down_to": 1.5,
                        "max_delete_fraction": 50},
            },
            "warnings": {"thresholds": ["80%", 90], "rearm_below": 75},
            "smtp": {"host": "smtp.example.org", "from": "postmaster@example.org"},
        }
    )  # fmt: skip
    fields = {line.split(": ")[1] for line in lines}
    assert {"rules.big.when_above", "rules.big.down_to", "rules.big.max_delete_fraction"} <= fields
    assert "warnings.rearm_below" in fields
    assert "warnings.thresholds" in fields
