"""A wrong local clock against the real sandbox Dovecot: nothing is deleted, the account reports ``clock``."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from quotawatch.config.secrets import SecretCache
from quotawatch.service.daemon import Daemon
from quotawatch.service.jobs import run_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from tests.integration import test_retention as base
from tests.support import imap_account, write_config

YEAR = timedelta(days=365)


def trash_with_young_and_old(user: Any) -> list[int]:
    return base.deliver(user, "Trash", [(40, "S")] * 3 + [(5, "S")] * 3 + [(0.1, "S")] * 2)


def test_a_clock_a_year_ahead_deletes_nothing_and_reports_clock(tmp_path: Path, user: Any) -> None:
    assert "WITHIN" in base.session_caps(user)  # the server judges the clock itself
    trash = trash_with_young_and_old(user)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = base.run(config, account, apply=True, now=base.NOW + YEAR)
    assert base.uids_in(user, "Trash") == trash and base.audited(config) == []
    assert result is not None and not result.ok and result.messages == 0
    assert plan.reason == "clock" and plan.actions == ()
    assert plan.error is not None and "ahead of the server's" in plan.error
    # with the right clock the same rule takes just the old mail
    plan, result = base.run(config, account, apply=True)
    assert plan.ok and base.planned(plan) == trash[:3] and result is not None and result.ok
    assert base.uids_in(user, "Trash") == trash[3:]


@pytest.mark.parametrize("skew", [2, -2], ids=["2h-ahead", "2h-behind"])
def test_a_clock_hours_off_is_caught_on_the_candidates_the_plan_found(
    tmp_path: Path, user: Any, skew: int, lines: list[str]
) -> None:
    """The server judges the clock on the newest candidate in the search's own selection; a
    candidate that fails the combined question is asked about one question at a time."""
    trash = trash_with_young_and_old(user)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = base.run(config, account, apply=True, now=base.NOW + timedelta(hours=skew))
    assert plan.reason == "clock" and plan.error is not None
    assert ("ahead" if skew > 0 else "behind") in plan.error
    assert result is not None and result.messages == 0 and base.uids_in(user, "Trash") == trash
    assert any("NOT YOUNGER" in line for line in lines), lines  # the sample was tried first
    lines.clear()
    plan, result = base.run(config, account, apply=True)
    assert plan.ok and base.planned(plan) == trash[:3] and result is not None and result.ok
    assert lines.count('EXAMINE "Trash"') == 1 and not any("FETCH *" in x for x in lines), lines


def test_checks_and_warnings_go_on_while_cleanup_stops(tmp_path: Path, user: Any) -> None:
    trash_with_young_and_old(user)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    state = State(config.state_dir)
    warned: list[Any] = []
    try:
        job = run_account(
            account, config, state, SecretCache(), cleanup=True, now=base.NOW + YEAR,
            warn=lambda *args, **kw: warned.append(args),
        )  # fmt: skip
    finally:
        state.close()
    assert job.report.ok and job.report.snapshot is not None  # the check itself succeeded
    assert [reason for reason, _ in job.failures] == ["clock"]
    assert job.cleanup is None and len(warned) == 1


def test_the_daemon_counts_and_logs_a_clock_stop(
    tmp_path: Path, user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the daemon's job: the account's and the fleet's error counters go up by reason
    ``clock`` (read back by name from the daemon's collector) and the ``clock account=`` line is
    logged; nothing is deleted, and the check itself is stored as ok."""
    trash = trash_with_young_and_old(user)
    account = imap_account(user.dovecot, "skewed", user.name, user.password, tmp_path,
                           rules=["trash-30d"], max_delete_fraction=1.0)  # fmt: skip
    config = write_config(tmp_path, [account], rules=base.RULES,
                          schedule={"interval": "15m", "jitter": "0s", "cleanup": True})  # fmt: skip
    daemon = Daemon(str(config), clock=lambda: base.NOW + YEAR)
    daemon.start(paused=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(daemon.collector)
    mine = {"account": "skewed", "reason": "clock"}
    try:
        assert not registry.get_sample_value("quotawatch_account_errors_total", mine)
        assert not registry.get_sample_value("quotawatch_errors_total", {"reason": "clock"})
        with caplog.at_level(logging.WARNING):
            result = daemon.run_job("skewed")
        assert result is not None and [r for r, _ in result.failures] == ["clock"]
        assert result.report.ok and result.cleanup is None
        assert registry.get_sample_value("quotawatch_account_errors_total", mine) == 1
        assert registry.get_sample_value("quotawatch_errors_total", {"reason": "clock"}) == 1
        assert registry.get_sample_value("quotawatch_account_up", {"account": "skewed"}) == 1
        clock_lines = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("clock ")
        ]
        assert len(clock_lines) == 1 and clock_lines[0].startswith("clock account=skewed: ")
        assert "cleanup stopped, checks and warnings go on" in clock_lines[0]
        assert base.uids_in(user, "Trash") == trash
        daemon.run_job("skewed")  # counted again at every stopped run, not only the first
        assert registry.get_sample_value("quotawatch_account_errors_total", mine) == 2
        assert registry.get_sample_value("quotawatch_errors_total", {"reason": "clock"}) == 2
    finally:
        daemon.stop()
    assert base.uids_in(user, "Trash") == trash


def test_a_clock_far_behind_deletes_nothing_and_leaves_no_false_records(
    tmp_path: Path, user: Any
) -> None:
    trash = trash_with_young_and_old(user)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = base.run(config, account, apply=True, now=base.NOW - YEAR)
    assert plan.reason == "clock" and plan.error is not None and "behind" in plan.error
    assert result is not None and result.messages == 0 and base.uids_in(user, "Trash") == trash
    plan, result = base.run(config, account, apply=True)
    assert plan.ok and base.planned(plan) == trash[:3]


def test_without_within_the_last_run_is_the_evidence(
    tmp_path: Path, user: Any, dovecot_plain: Dovecot
) -> None:
    dovecot_plain.add_user(user.name, user.password)
    user = type(user)(user.name, user.password, dovecot_plain)
    assert "WITHIN" not in base.session_caps(user)
    trash = trash_with_young_and_old(user)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, _ = base.run(config, account, apply=False)  # a run with a plausible clock
    assert plan.ok and base.planned(plan) == trash[:3]
    plan, result = base.run(config, account, apply=True, now=base.NOW + YEAR)
    assert plan.reason == "clock" and plan.error is not None and "past the newest" in plan.error
    assert result is not None and result.messages == 0 and base.uids_in(user, "Trash") == trash
    plan, result = base.run(config, account, apply=True, now=base.NOW - YEAR)
    assert plan.reason == "clock" and plan.error is not None and "before the last run" in plan.error
    assert base.uids_in(user, "Trash") == trash


def test_keep_newer_than_counts_from_arrival_not_from_the_date_header(
    tmp_path: Path, user: Any
) -> None:
    """A message that arrived two hours ago claiming to be from 2018 is not a day old yet."""
    old = b"Subject: old\r\nDate: Mon, 1 Jan 2018 10:00:00 +0000\r\n\r\nbody\r\n"
    user.dovecot.deliver_bulk(user.name, "Sent", [
        (old, base.NOW - timedelta(hours=2), "S"),
        (old, base.NOW - timedelta(days=3), "S"),
    ])  # fmt: skip
    sent = base.uids_in(user, "Sent")
    rules = {"sent-30d": {"folders": ["\\Sent"], "older_than": "30d", "age": "sent"}}
    config, account, _ = base.setup(tmp_path, user, ["sent-30d"], rules, max_delete_fraction=1.0)
    plan, result = base.run(config, account, apply=True)
    assert base.planned(plan) == sent[1:] and result is not None and result.ok
    assert base.uids_in(user, "Sent") == sent[:1]
