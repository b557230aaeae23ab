"""Adaptive scheduling: no level is crossed and left unnoticed longer than the fixed interval allows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.events import EVENT_JOB_EXECUTED

from quotawatch.service.adaptive import next_delay, warning_levels
from quotawatch.service.daemon import Daemon
from quotawatch.state import State

FIXED = timedelta(minutes=15)
MAX = timedelta(hours=6)
LEVELS = [0.8, 0.9, 0.95, 1.0]


def test_far_and_slow_waits_up_to_max_interval() -> None:
    assert next_delay(0.2, 0.001, LEVELS, FIXED, MAX) == MAX
    assert next_delay(0.2, 0.0, LEVELS, FIXED, MAX) == MAX
    assert next_delay(0.5, -0.01, LEVELS, FIXED, MAX) == MAX


def test_close_or_fast_comes_sooner() -> None:
    near = next_delay(0.79, 0.1, LEVELS, FIXED, MAX)
    far = next_delay(0.5, 0.1, LEVELS, FIXED, MAX)
    fast = next_delay(0.5, 1.0, LEVELS, FIXED, MAX)
    assert FIXED <= near < far and FIXED <= fast < far
    assert near == FIXED + timedelta(days=0.01 / 0.2)


def test_unknown_or_above_every_level_keeps_the_fixed_interval() -> None:
    assert next_delay(None, 0.1, LEVELS, FIXED, MAX) == FIXED
    assert next_delay(0.5, None, LEVELS, FIXED, MAX) == FIXED
    assert next_delay(1.02, 0.1, LEVELS, FIXED, MAX) == FIXED


def test_no_crossing_unnoticed_longer_than_the_fixed_interval() -> None:
    rng = random.Random(13)
    for _ in range(20_000):
        ratio = rng.uniform(0, 1.05)
        growth = rng.choice([0.0, rng.uniform(0, 0.001), rng.uniform(0, 0.1), rng.uniform(0, 5)])
        levels = [*sorted(rng.sample([0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99], 3)), 1.0]
        interval = timedelta(minutes=rng.choice([1, 5, 15, 60]))
        delay = next_delay(ratio, growth, levels, interval, MAX)
        assert interval <= delay <= max(interval, MAX)
        for actual in (growth, growth * 2):  # measured rate, and twice as fast
            if actual <= 0:
                continue
            for level in (lv for lv in levels if lv > ratio):
                crossed_after = timedelta(days=(level - ratio) / actual)
                if crossed_after <= delay:
                    assert delay - crossed_after <= interval + timedelta(microseconds=1)


def test_free_space_thresholds_become_levels_at_the_account_limit() -> None:
    assert warning_levels([0.8], [50], 1000) == [0.8, 0.95, 1.0]
    assert warning_levels([0.8, 0.9], [5000], 1000) == [0.8, 0.9, 1.0]
    assert warning_levels([], [50], 0) == [1.0]


def test_the_daemon_schedules_each_account_by_its_delay(tmp_path: Path) -> None:
    from tests.unit.test_scheduler import Server, started, wait_for, write_config

    path = write_config(tmp_path, ["alice", "bob"], adaptive=True, max_interval="6h")
    state = State(tmp_path / "state")
    now = datetime.now(UTC)
    for days in (2, 1):  # alice: flat at 10 % for two days; bob: no history
        state.save_report("alice", now - timedelta(days=days), True, {}, (100, 1000, "STORAGE"))
    state.close()
    server = Server()
    daemon = Daemon(str(path), factory=server.factory)
    events = started(daemon)
    try:
        wait_for(events, EVENT_JOB_EXECUTED, {"alice", "bob"})
        due = {j.id: j.next_run_time for j in daemon.scheduler.get_jobs()}
        assert due["alice"] - now > timedelta(hours=5), "far and flat: up to max_interval"
        assert due["bob"] - now < timedelta(hours=1, minutes=5), "unknown growth: the interval"
    finally:
        assert daemon.stop(grace=5)
