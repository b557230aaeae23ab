"""Is the local clock plausible enough to measure ages by? A pure decision over the server's evidence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from quotawatch.mail.session import ClockProbe
from quotawatch.units import format_duration

#: How far the local clock may stray from the server's clock, measured by the server (WITHIN).
#: Any error makes messages look older (ahead) or younger (behind) by that much; an hour is far
#: above NTP's error and the time a job takes, and far below any rule's age (at least 1d).
SLACK = timedelta(hours=1)
#: Without the server's clock: how far the local clock may run past the newest evidence recorded
#: for the account (the last run whose clock was plausible, the newest arrival stamp seen). It
#: must exceed the longest normal gap between runs (a daemon stopped over a long weekend).
EVIDENCE_SLACK = timedelta(days=7)


@dataclass(frozen=True)
class ClockRecord:
    """What earlier runs saw of an account, in state: the newest arrival stamp the server set and
    the local time of the last run whose clock was judged plausible."""

    newest_stamp: datetime | None = None
    last_run: datetime | None = None


@dataclass(frozen=True)
class ClockVerdict:
    """``problem`` None: ages may be measured by ``now``; else why cleanup must stop."""

    problem: str | None
    record: ClockRecord

    @property
    def ok(self) -> bool:
        return self.problem is None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def judge(
    now: datetime,
    probe: ClockProbe | None,
    record: ClockRecord,
    *,
    slack: timedelta = SLACK,
    evidence_slack: timedelta = EVIDENCE_SLACK,
) -> ClockVerdict:
    """The verdict on ``now`` and the record to keep (updated only by a plausible clock).

    The server's own verdict (``probe.ahead``/``behind``, from WITHIN) decides where there is one.
    Otherwise: ``now`` more than ``slack`` before the last plausible run means the clock went back;
    more than ``evidence_slack`` past the newest of that run and any arrival stamp seen means it
    jumped ahead. An account never seen before has no evidence: its first run trusts the clock.
    """
    stamp = probe.stamp if probe is not None else None
    newest = _later(record.newest_stamp, stamp if stamp is not None and stamp <= now else None)
    if probe is not None and probe.ahead:
        return ClockVerdict(
            f"the local clock is more than {format_duration(slack)} ahead of the server's", record
        )
    if probe is not None and probe.behind:
        return ClockVerdict(
            f"the local clock is more than {format_duration(slack)} behind the server's", record
        )
    if probe is None or probe.ahead is None:
        last = record.last_run
        if last is not None and now < last - slack:
            return ClockVerdict(
                f"the local clock is {format_duration(last - now)} before the last run "
                f"({last.isoformat(timespec='seconds')})",
                record,
            )
        evidence = _later(last, newest)
        if last is not None and evidence is not None and now - evidence > evidence_slack:
            return ClockVerdict(
                f"the local clock is {format_duration(now - evidence)} past the newest evidence "
                f"of the server's time ({evidence.isoformat(timespec='seconds')}), more than "
                f"{format_duration(evidence_slack)}",
                record,
            )
    vouched = probe is not None and probe.ahead is not None  # the server confirmed ``now``
    return ClockVerdict(None, ClockRecord(newest, now if vouched else _later(record.last_run, now)))
