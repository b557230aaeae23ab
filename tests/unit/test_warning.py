"""The pure warning decision over sequences of usage readings with an injected clock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quotawatch.config import Warnings
from quotawatch.model import FolderInfo, QuotaResource, Snapshot
from quotawatch.warnings.decision import (
    Decision,
    Usage,
    WarningState,
    decide,
    failed,
    retry_delay,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
MiB = 1024 * 1024
LIMIT = 100 * MiB


def policy(**kw: Any) -> Warnings:
    data: dict[str, Any] = {"thresholds": ["80%", "90%", "95%"], "rearm_below": "75%"}
    data.update(kw)
    return Warnings.model_validate(data)


def u(ratio: float) -> Usage:
    return Usage(ratio, int(ratio * LIMIT), LIMIT)


def run(
    readings: Iterable[float], pol: Warnings, *, every: timedelta = timedelta(minutes=15)
) -> tuple[list[tuple[int, str | None, str | None]], WarningState]:
    """Feed readings one check apart, storing the state as if every mail was accepted."""
    state, sent = WarningState(), []
    for i, ratio in enumerate(readings):
        d = decide(u(ratio), state, pol, T0 + i * every)
        if d.kind is not None:
            sent.append((i, d.kind, d.threshold))
        state = d.state
    return sent, state


def test_one_mail_per_crossing_across_many_checks() -> None:
    sent, state = run([0.5, 0.79, 0.81, 0.82, 0.85, 0.84, 0.86, 0.88], policy())
    assert sent == [(2, "warning", "80%")]
    assert state.fired == ("80%",)


def test_usage_dipping_between_threshold_and_rearm_does_not_refire() -> None:
    sent, _ = run([0.81, 0.78, 0.81, 0.77, 0.82], policy())
    assert sent == [(0, "warning", "80%")]


def test_rearm_after_falling_below_then_fires_again() -> None:
    sent, _ = run([0.81, 0.74, 0.76, 0.81], policy(all_clear=False))
    assert sent == [(0, "warning", "80%"), (3, "warning", "80%")]


def test_higher_threshold_sends_its_own_mail() -> None:
    sent, state = run([0.81, 0.85, 0.91, 0.93, 0.96, 0.97], policy())
    assert sent == [(0, "warning", "80%"), (2, "warning", "90%"), (4, "warning", "95%")]
    assert state.fired == ("80%", "90%", "95%")


def test_jump_over_several_thresholds_sends_one_mail_for_the_highest() -> None:
    sent, state = run([0.5, 0.96, 0.97], policy())
    assert sent == [(1, "warning", "95%")]
    assert state.fired == ("80%", "90%", "95%")


def test_reminder_after_the_interval_while_above_highest_crossed() -> None:
    day = timedelta(days=1)
    sent, _ = run([0.91] * 16, policy(remind_every="7d"), every=day)
    assert sent == [(0, "warning", "90%"), (7, "reminder", "90%"), (14, "reminder", "90%")]


def test_no_reminder_when_below_highest_crossed_threshold() -> None:
    day = timedelta(days=1)
    sent, _ = run([0.91, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85], policy(), every=day)
    assert sent == [(0, "warning", "90%")]


def test_no_reminders_when_disabled() -> None:
    sent, _ = run([0.91] * 20, policy(remind_every=None), every=timedelta(days=1))
    assert sent == [(0, "warning", "90%")]


def test_all_clear_once_when_falling_below_rearm() -> None:
    sent, state = run([0.85, 0.80, 0.70, 0.60, 0.50], policy())
    assert sent == [(0, "warning", "80%"), (2, "all_clear", "all_clear")]
    assert state.fired == ()


def test_no_all_clear_without_an_earlier_warning() -> None:
    sent, _ = run([0.5, 0.6, 0.4], policy())
    assert sent == []


def test_absolute_free_threshold() -> None:
    pol = policy(thresholds=["80%", "5MiB free"])
    readings = [0.5, 0.81, 0.94, 0.951, 0.96, 0.97]  # 5 MiB free = 95% of 100 MiB
    sent, state = run(readings, pol)
    assert sent == [(1, "warning", "80%"), (3, "warning", "5MiB free")]
    assert state.fired == ("80%", "5MiB free")


def test_absolute_threshold_without_storage_limit_never_fires() -> None:
    pol = policy(thresholds=["10MB free"])
    d = decide(Usage(0.99), WarningState(), pol, T0)
    assert d.kind is None


def test_absolute_threshold_exceeded_below_rearm_does_not_oscillate() -> None:
    # a tiny mailbox: 60 MB free threshold on 100 MiB means it is exceeded from ~43% on
    pol = policy(thresholds=["80%", "60MB free"])
    sent, _ = run([0.6, 0.6, 0.7, 0.6, 0.7], pol)
    assert sent == [(0, "warning", "60MB free")]


def test_pending_warning_waits_for_retry_and_is_sent_once() -> None:
    pol = policy()
    state = WarningState()
    d = decide(u(0.85), state, pol, T0)
    assert d.kind == "warning"
    state = failed(state, d, T0, "SMTP down")  # not accepted: stored as pending
    assert state.fired == () and state.pending is not None
    assert state.pending.retry_at == T0 + timedelta(minutes=5)

    early = decide(u(0.86), state, pol, T0 + timedelta(minutes=2))
    assert early.kind is None and early.state == state

    again = decide(u(0.86), state, pol, T0 + timedelta(minutes=6))
    assert (again.kind, again.threshold) == ("warning", "80%")
    state = failed(state, again, T0 + timedelta(minutes=6), "SMTP down")
    assert state.pending is not None and state.pending.attempts == 2
    assert state.pending.retry_at == T0 + timedelta(minutes=16)

    ok = decide(u(0.86), state, pol, T0 + timedelta(minutes=20))
    assert ok.kind == "warning"
    state = ok.state  # accepted
    assert state.pending is None and state.fired == ("80%",)
    later = [decide(u(0.86), state, pol, T0 + timedelta(minutes=30 + i)) for i in range(5)]
    assert all(d.kind is None for d in later)


def test_pending_for_a_lower_threshold_becomes_the_higher_one() -> None:
    pol = policy()
    d = decide(u(0.85), WarningState(), pol, T0)
    state = failed(WarningState(), d, T0, "down")
    d2 = decide(u(0.92), state, pol, T0 + timedelta(hours=1))
    assert (d2.kind, d2.threshold) == ("warning", "90%")
    assert d2.state.fired == ("80%", "90%")


def test_obsolete_pending_is_dropped_when_usage_fell() -> None:
    pol = policy()
    d = decide(u(0.85), WarningState(), pol, T0)
    state = failed(WarningState(), d, T0, "down")
    d2 = decide(u(0.5), state, pol, T0 + timedelta(hours=1))
    assert d2.kind is None and d2.state == WarningState()


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=20),
    ]
    assert retry_delay(50) == timedelta(hours=4)


def test_state_round_trips_through_a_dict() -> None:
    pol = policy()
    d = decide(u(0.91), WarningState(), pol, T0)
    state = failed(d.state, Decision("reminder", "90%", d.state, ""), T0, "x")
    assert WarningState.from_dict(state.to_dict()) == state
    assert WarningState.from_dict(None) == WarningState()
    import json

    assert WarningState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_usage_from_snapshot_uses_fullest_resource_and_storage_bytes() -> None:
    snap = Snapshot(
        "a",
        "imap",
        T0,
        (
            QuotaResource("User quota", "STORAGE", 50 * MiB, LIMIT),
            QuotaResource("User quota", "MESSAGE", 950, 1000),
        ),
        (FolderInfo("INBOX", 950, 50 * MiB),),
    )
    usage = Usage.from_snapshot(snap)
    assert usage == Usage(0.95, 50 * MiB, LIMIT)
    assert usage.free_bytes == 50 * MiB
    assert Usage.from_snapshot(Snapshot("a", "imap", T0, (), ())) is None


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        (["80%", "80%"], "listed twice"),
        (["70%"], "must be above rearm_below"),
        (["eighty"], 'use a percentage such as "80%"'),
        ([{}], "either a percentage"),
    ],
)
def test_bad_thresholds_are_config_errors(thresholds: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy(thresholds=thresholds)


def test_threshold_labels() -> None:
    pol = policy(thresholds=["80%", "50MB free", "1GiB free", "95.5%"])
    assert [t.label for t in pol.thresholds] == ["80%", "50MB free", "1GiB free", "95.5%"]
