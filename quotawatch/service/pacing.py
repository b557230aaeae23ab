"""When an account's next check is due under ``schedule.adaptive``: its levels, its growth, ``adaptive.next_delay``."""

from __future__ import annotations

from datetime import datetime, timedelta

from quotawatch.config import Config
from quotawatch.model import AccountReport
from quotawatch.service.adaptive import next_delay, warning_levels
from quotawatch.state import State
from quotawatch.warnings.forecast import WINDOW, trend

#: adaptive scheduling is on by default from this many accounts on
ADAPTIVE_FROM = 1000
DEFAULT_RATIOS = (0.8, 0.9, 0.95)


def adaptive(config: Config, accounts: int) -> bool:
    """Whether the schedule adapts (``schedule.adaptive``, default on above 1,000 accounts)."""
    setting = config.schedule.adaptive
    return accounts > ADAPTIVE_FROM if setting is None else setting


def delay_after(report: AccountReport, config: Config, state: State, now: datetime) -> timedelta:
    """The delay until the account's next check after this report (the fixed interval when
    its usage or growth is unknown)."""
    schedule = config.schedule
    snap = report.snapshot
    fullest = snap.fullest() if snap is not None else None
    if fullest is None:
        return schedule.interval
    thresholds = config.warnings.thresholds if config.warnings is not None else ()
    ratios = [t.ratio for t in thresholds if t.ratio is not None] or list(DEFAULT_RATIOS)
    free = [t.free_bytes for t in thresholds if t.free_bytes is not None]
    levels = warning_levels(ratios, free, fullest.limit if fullest.resource == "STORAGE" else 0)
    found = trend(state.usage_history(report.name, since=now - WINDOW), now)
    growth = found[1] if found is not None else None
    return next_delay(fullest.usage / fullest.limit, growth, levels, schedule.interval,
                      schedule.max_interval)  # fmt: skip
