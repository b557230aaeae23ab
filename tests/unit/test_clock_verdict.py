"""The clock verdict (pure): the server's own judgement wins; without one, the recorded evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quotawatch.mail.session import ClockProbe
from quotawatch.retention.clock import EVIDENCE_SLACK, SLACK, ClockRecord, judge

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
STAMP = NOW - timedelta(days=3)  # the newest message's INTERNALDATE


def test_the_servers_verdict_decides_where_it_gave_one() -> None:
    fine = judge(NOW, ClockProbe(STAMP, ahead=False, behind=False), ClockRecord())
    assert fine.ok and fine.record == ClockRecord(STAMP, NOW)
    ahead = judge(NOW, ClockProbe(STAMP, ahead=True, behind=False), ClockRecord())
    assert not ahead.ok and ahead.problem == "the local clock is more than 1h ahead of the server's"
    behind = judge(NOW, ClockProbe(STAMP, ahead=False, behind=True), ClockRecord())
    assert not behind.ok and behind.problem is not None and "1h behind" in behind.problem


def test_a_vouched_clock_wins_over_old_records_and_an_implausible_one_records_nothing() -> None:
    record = ClockRecord(STAMP, NOW + timedelta(days=300))  # written by a clock that was wrong
    assert judge(NOW, ClockProbe(STAMP, False, False), record).record.last_run == NOW
    bad = judge(NOW + timedelta(days=365), ClockProbe(STAMP, True, False), record)
    assert bad.record == record


def test_without_the_servers_clock_the_first_run_trusts_the_clock() -> None:
    verdict = judge(NOW, None, ClockRecord())
    assert verdict.ok and verdict.record == ClockRecord(None, NOW)
    # an old stamp of a dormant account alone is no evidence against the clock
    assert judge(NOW, ClockProbe(NOW - timedelta(days=900)), ClockRecord()).ok


def test_a_jump_past_the_last_run_beyond_the_slack_stops() -> None:
    record = ClockRecord(None, NOW)
    assert judge(NOW + EVIDENCE_SLACK, None, record).ok
    later = NOW + EVIDENCE_SLACK + timedelta(minutes=1)
    verdict = judge(later, None, record)
    assert verdict.problem is not None and "past the newest evidence" in verdict.problem
    assert verdict.record == record  # the wrong clock is not written down as evidence
    assert judge(NOW + timedelta(days=365), None, record).problem is not None


def test_new_mail_stamped_by_the_server_is_evidence_too() -> None:
    """After a long pause, mail that arrived recently (by the server's clock) vouches for now."""
    record = ClockRecord(None, NOW)
    later = NOW + timedelta(days=30)
    assert not judge(later, None, record).ok
    fresh = judge(later, ClockProbe(later - timedelta(hours=2)), record)
    assert fresh.ok and fresh.record == ClockRecord(later - timedelta(hours=2), later)
    # a stamp in the future of the local clock (a client-set INTERNALDATE) is not recorded
    assert (
        judge(NOW, ClockProbe(NOW + timedelta(days=9)), ClockRecord()).record.newest_stamp is None
    )


def test_a_clock_that_went_back_before_the_last_run_stops() -> None:
    record = ClockRecord(None, NOW)
    assert judge(NOW - SLACK, None, record).ok
    verdict = judge(NOW - SLACK - timedelta(seconds=1), None, record)
    assert verdict.problem is not None and "before the last run" in verdict.problem
    assert not judge(NOW - timedelta(days=365), ClockProbe(STAMP), record).ok
