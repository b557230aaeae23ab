"""The aggregates kept in memory give what SQL gives over every row, after any sequence of writes."""

from __future__ import annotations

import math
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.service.fleet_metrics import BANDS
from quotawatch.state import State
from quotawatch.totals import exact, rounded

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
REASONS = ("auth", "timeout", "tls", None)  # None: stored without a reason ("internal")
#: usages on and around the band bounds and levels, a missing one, and some above full
RATIOS = (*BANDS, 0.0, 0.1, 0.3, 0.79999, 0.8000001, 1.2, 0.123456789, 1 / 3, 2 / 3, None)


def report(rng: random.Random) -> tuple[bool, dict[str, Any]]:
    if rng.random() < 0.15:
        reason = rng.choice(REASONS)
        return False, ({"reason": reason} if reason else {})
    if rng.random() < 0.05:  # no quota at all
        return True, {"usage_ratio": None}
    ratio = rng.choice(RATIOS) if rng.random() < 0.5 else rng.random() * 1.1
    limit = rng.choice((0, 10**9, rng.randrange(1, 10**11)))
    quota = [{"root": "User quota", "resource": "STORAGE", "usage": rng.randrange(10**10),
              "limit": limit}]  # fmt: skip
    if rng.random() < 0.3:
        quota.append({"root": "User quota", "resource": "MESSAGE", "usage": 7, "limit": 100})
    return True, {"usage_ratio": ratio, "quota": quota, "duration_seconds": 0.5}


def groups(rng: random.Random, names: list[str]) -> list[tuple[str, str, str]]:
    sources, hosts = ("students", "staff", "accounts", "é-ü"), ("imap1", "imap2", "Imap3")
    configured = rng.sample(names, rng.randrange(len(names) // 2, len(names)))
    return [(n, rng.choice(sources), rng.choice(hosts)) for n in configured]


def assert_kept_equals_sql(state: State, level: float | None) -> None:
    """The kept summaries (served from memory) are the SQL ones: counts exactly; float sums
    the exact sum of the stored values, correctly rounded (SQL's TOTAL adds in row order, so
    it may differ in the last bits)."""
    kept = state.fleet_summary(BANDS)
    assert state._totals is not None, "the summary did not come from the kept aggregates"
    sql = state.fleet_summary_sql(BANDS)
    assert (kept.at_or_below, kept.count, kept.oldest_check, kept.rows, kept.failing) == (
        sql.at_or_below, sql.count, sql.oldest_check, sql.rows, sql.failing
    )  # fmt: skip
    assert (kept.used_bytes, kept.limit_bytes) == (sql.used_bytes, sql.limit_bytes)
    assert kept.ratio_sum == pytest.approx(sql.ratio_sum, rel=1e-12, abs=1e-12)
    rows = state._query(
        "SELECT m.ratio, g.source, g.host FROM metric_rows m "
        "LEFT JOIN account_groups g ON g.account = m.account WHERE m.ratio IS NOT NULL"
    )
    assert kept.ratio_sum == math.fsum(r for r, _s, _h in rows)
    kept_groups = state.source_summaries(BANDS, level)
    assert state._totals is not None
    sql_groups = state.source_summaries_sql(BANDS, level)
    assert [(g.source, g.host) for g in kept_groups] == [(g.source, g.host) for g in sql_groups]
    for k, s in zip(kept_groups, sql_groups, strict=True):
        assert (k.configured, k.checked, k.at_or_below, k.count, k.exported, k.failing) == (
            s.configured, s.checked, s.at_or_below, s.count, s.exported, s.failing
        ), (k, s)  # fmt: skip
        assert (k.used_bytes, k.limit_bytes) == (s.used_bytes, s.limit_bytes)
        assert k.ratio_sum == pytest.approx(s.ratio_sum, rel=1e-12, abs=1e-12)
        ratios = [r for r, src, host in rows if (src, host) == (k.source, k.host)]
        assert k.ratio_sum == math.fsum(ratios)


@pytest.mark.parametrize("seed", range(6))
def test_kept_aggregates_follow_stores_failures_removals_and_reloads(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    state = State(tmp_path)
    names = [f"u{i:03d}" for i in range(60)]
    level: float | None = rng.choice((0.8, 0.0, None))
    state.keep_totals(BANDS, level)
    state.set_account_groups(groups(rng, names))
    other = sqlite3.connect(state.path, isolation_level=None)  # a CLI run beside the daemon
    at = NOW
    for step in range(400):
        at += timedelta(seconds=rng.randrange(1, 600))
        roll = rng.random()
        if roll < 0.75:  # a check stored, most of them replacing an older one
            name = rng.choice(names)
            ok, data = report(rng)
            state.save_report(name, at - timedelta(hours=rng.randrange(48)), ok, data)
        elif roll < 0.85:  # a reload: accounts removed, sources and hosts rewritten, level
            keep = rng.sample(names, rng.randrange(len(names) // 2, len(names)))
            state.forget_accounts(keep)
            if rng.random() < 0.5:
                level = rng.choice((0.8, 0.9, 0.0, None))
                state.keep_totals(BANDS, level)
            state.set_account_groups(groups(rng, names))
        elif roll < 0.9:  # removals alone
            state.forget_accounts(rng.sample(names, len(names) - rng.randrange(1, 4)))
        elif roll < 0.95:  # another connection writes: seen by its data_version
            other.execute(
                "UPDATE metric_rows SET ratio = ?, ok = 0, reason = 'tls' WHERE account = ?",
                (rng.random(), rng.choice(names)),
            )
            if rng.random() < 0.5:  # even the groups, then a check is stored before a scrape
                other.execute("UPDATE account_groups SET host = 'elsewhere'")
                ok, data = report(rng)
                state.save_report(rng.choice(names), at, ok, data)
        else:  # a write through transaction() (tests, benchmarks): rebuilt after it
            with state.transaction() as db:
                db.execute("DELETE FROM metric_rows WHERE account = ?", (rng.choice(names),))
        if step % 7 == 0 or roll >= 0.75:
            assert_kept_equals_sql(state, level)
    assert_kept_equals_sql(state, level)
    other.close()
    state.close()


def test_other_bounds_and_levels_get_the_sql_summaries(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.keep_totals(BANDS, 0.8)
    state.set_account_groups([("a", "s", "h")])
    state.save_report("a", NOW, True, {"usage_ratio": 0.85})
    assert state.fleet_summary((0.5, 0.9)) == state.fleet_summary_sql((0.5, 0.9))
    assert state.source_summaries(BANDS, 0.9) == state.source_summaries_sql(BANDS, 0.9)
    (kept,) = state.source_summaries(BANDS, 0.8)
    assert kept.exported == 1 and kept.at_or_below == (0, 0, 1, 1, 1)


def test_sums_are_exact_whatever_the_order() -> None:
    values = [0.1, 1e-300, 1 / 3, 2.5e15, 5e-324, 0.7] * 50
    total = sum(map(exact, values))
    assert rounded(total) == math.fsum(values)
    for value in values:
        total -= exact(value)
    assert total == 0
    assert exact(3) == exact(3.0)


def test_byte_counts_sql_cannot_sum_exactly_are_added_row_by_row(tmp_path: Path) -> None:
    """A REAL among the byte counts, or a sum past 2**63: the rebuild adds the rows itself."""
    state = State(tmp_path)
    state.save_report("a", NOW, True, {"usage_ratio": 0.5})
    state.save_report("b", NOW, False, {"reason": "auth"})
    with state.transaction() as db:
        db.execute("UPDATE metric_rows SET used_bytes = 1.5, limit_bytes = ? WHERE account = 'a'",
                   (2**62,))  # fmt: skip
        db.execute("UPDATE metric_rows SET limit_bytes = ? WHERE account = 'b'", (2**62,))
    state.keep_totals(BANDS, 0.8)
    state.set_account_groups([("a", "s", "h"), ("b", "s", "h")])
    assert_kept_equals_sql(state, 0.8)
    assert state.fleet_summary(BANDS).used_bytes == 1.5
    assert state.fleet_summary(BANDS).limit_bytes == 2.0**63
