"""Metrics that scale: per-account series only where they matter, fleet series always, compact rows."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from quotawatch.model import AccountReport, FolderInfo, QuotaResource, Snapshot
from quotawatch.service.fleet_metrics import Cycles
from quotawatch.service.jobs import report_data
from quotawatch.service.metrics import Counters, Histogram, StateCollector
from quotawatch.state import State
from tests.support import assert_sources_sum_to_the_fleet

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
MiB = 1024 * 1024


def store(
    state: State, name: str, ratio: float | None, *, ok: bool = True, at: datetime = NOW
) -> None:
    if not ok:
        report = AccountReport(name, "imap", error=f"{name}: refused", reason="auth")
    else:
        limit = 100 * MiB if ratio is not None else 0
        quota = (QuotaResource("User quota", "STORAGE", int((ratio or 0.1) * 100 * MiB), limit),)
        folders = tuple(FolderInfo(f"F{i}", i, i * 1000) for i in range(3))
        report = AccountReport(name, "imap", snapshot=Snapshot(name, "imap", at, quota, folders))
    state.save_report(name, at, ok, report_data(report, at, None))


def collected(collector: StateCollector) -> tuple[str, CollectorRegistry]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode(), registry


def fleet_state(tmp_path: Path) -> tuple[State, list[str]]:
    state = State(tmp_path)
    names = []
    for i, ratio in enumerate([0.1, 0.3, 0.5, 0.6, 0.8, 0.85, 0.9, 0.93, 0.97, 1.0, None]):
        names.append(f"a{i}")
        store(state, f"a{i}", ratio, at=NOW - timedelta(minutes=i))
    names.append("broken")
    store(state, "broken", None, ok=False)
    names.append("unchecked")
    return state, names


def collector_for(
    state: State,
    names: list[str],
    level: float | None,
    groups: list[tuple[str, str, str]] | None = None,
) -> StateCollector:
    collector = StateCollector(state, Counters(), Histogram())
    collector.now = NOW.timestamp
    rules = {n: [("trash", "delete")] for n in names}
    collector.configure(names, 10, True, rules, level, groups or [])
    return collector


def fleet_groups(names: list[str]) -> list[tuple[str, str, str]]:
    """a0-a5 from source staff on imap1, a6-a10 from students on imap2, broken and unchecked
    listed under accounts: on each host."""
    groups = [(n, "staff", "imap1") for n in names[:6]]
    groups += [(n, "students", "imap2") for n in names[6:11]]
    return [*groups, ("broken", "accounts", "imap1"), ("unchecked", "accounts", "imap2")]


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian: prometheus)"
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_above_level_exports_full_and_failing_accounts_only(tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    collector = collector_for(state, names, 0.8)
    collector.counters.inc("quotawatch_cleanup_freed_bytes_total",
                           {"account": "a1", "rule": "trash", "action": "delete"}, 500)  # fmt: skip
    text, reg = collected(collector)
    shown = {s.labels["account"] for m in reg.collect() if m.name == "quotawatch_account_up"
             for s in m.samples}  # fmt: skip
    assert shown == {"a4", "a5", "a6", "a7", "a8", "a9", "broken"}
    assert reg.get_sample_value("quotawatch_metrics_accounts_omitted") == len(names) - 7
    assert reg.get_sample_value("quotawatch_account_up", {"account": "broken"}) == 0
    assert (
        reg.get_sample_value("quotawatch_folder_size_bytes", {"account": "a9", "folder": "F2"})
        == 2000
    )
    # a1's counter is not exported, its fleet twin is
    assert 'account="a1"' not in text
    labels = {"rule": "trash", "action": "delete"}
    assert reg.get_sample_value("quotawatch_fleet_cleanup_freed_bytes_total", labels) == 500


def test_fleet_series_bands_sums_failures_and_lag(tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    _text, reg = collected(collector_for(state, names, None))
    get = reg.get_sample_value
    assert get("quotawatch_metrics_accounts_omitted") == len(names)
    assert get("quotawatch_account_up", {"account": "a0"}) is None  # none: no account series
    # ratios 0.1 0.3 0.5 | 0.6 0.8 | 0.85 0.9 | 0.93 | 0.97 1.0 (a10 has no limit, broken failed)
    expected = {"0.5": 3, "0.8": 5, "0.9": 7, "0.95": 8, "1.0": 10, "+Inf": 10}
    for le, count in expected.items():
        assert get("quotawatch_fleet_usage_ratio_bucket", {"le": le}) == count, le
    assert get("quotawatch_fleet_usage_ratio_gcount") == 10
    assert get("quotawatch_fleet_usage_ratio_gsum") == pytest.approx(6.95)
    assert get("quotawatch_fleet_limit_bytes") == 10 * 100 * MiB
    assert get("quotawatch_fleet_accounts_failing", {"reason": "auth"}) == 1
    assert get("quotawatch_fleet_accounts_failing", {"reason": "tls"}) == 0
    assert get("quotawatch_fleet_accounts_checked") == 12
    assert get("quotawatch_check_lag_seconds") >= timedelta(minutes=10).total_seconds()


def test_all_mode_keeps_the_old_series_and_passes_promtool(tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    text, reg = collected(collector_for(state, names, 0.0))
    assert reg.get_sample_value("quotawatch_account_up", {"account": "unchecked"}) == 0
    assert reg.get_sample_value("quotawatch_quota_usage_ratio", {"account": "a0"}) == pytest.approx(
        0.1
    )
    assert reg.get_sample_value("quotawatch_metrics_accounts_omitted") == 0
    promtool_check(text)


def test_source_series_split_the_fleet_by_source_and_host(tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    text, reg = collected(collector_for(state, names, None, fleet_groups(names)))
    get = reg.get_sample_value
    staff = {"source": "staff", "host": "imap1"}
    students = {"source": "students", "host": "imap2"}
    # staff: 0.1 0.3 0.5 | 0.6 0.8 | 0.85; students: 0.9 | 0.93 | 0.97 1.0, a10 without a limit
    for group, counts in ((staff, (3, 5, 6, 6, 6, 6)), (students, (0, 0, 1, 2, 4, 4))):
        for le, count in zip(("0.5", "0.8", "0.9", "0.95", "1.0", "+Inf"), counts, strict=True):
            assert get("quotawatch_source_usage_ratio_bucket", {**group, "le": le}) == count
    assert get("quotawatch_source_usage_ratio_gcount", staff) == 6
    assert get("quotawatch_source_usage_ratio_gsum", staff) == pytest.approx(3.15)
    assert get("quotawatch_source_limit_bytes", students) == 4 * 100 * MiB
    assert get("quotawatch_source_accounts_configured", students) == 5
    assert get("quotawatch_source_accounts_checked", students) == 5
    assert get("quotawatch_source_accounts_omitted", students) == 5  # per_account: none
    explicit = {"source": "accounts", "host": "imap1"}
    assert get("quotawatch_source_accounts_failing", {**explicit, "reason": "auth"}) == 1
    assert get("quotawatch_source_usage_ratio_gcount", explicit) == 0
    # only reasons with failing accounts have a series here (the fleet series has every one)
    assert get("quotawatch_source_accounts_failing", {**staff, "reason": "auth"}) is None
    assert get("quotawatch_source_accounts_failing", {**explicit, "reason": "tls"}) is None
    unchecked = {"source": "accounts", "host": "imap2"}
    assert get("quotawatch_source_accounts_configured", unchecked) == 1
    assert get("quotawatch_source_accounts_checked", unchecked) == 0
    assert_sources_sum_to_the_fleet(reg)
    promtool_check(text)


@pytest.mark.parametrize("level", [0.0, 0.8, None])
def test_source_series_omitted_follow_per_account(level: float | None, tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    _text, reg = collected(collector_for(state, names, level, fleet_groups(names)))
    get = reg.get_sample_value
    omitted = {
        "staff": 0 if level == 0.0 else 4 if level else 6,  # a4 0.8 and a5 0.85 exported
        "students": 0 if level == 0.0 else 1 if level else 5,  # a10 has no limit
    }
    for source, host in (("staff", "imap1"), ("students", "imap2")):
        labels = {"source": source, "host": host}
        assert get("quotawatch_source_accounts_omitted", labels) == omitted[source], labels
    failing = get("quotawatch_source_accounts_omitted", {"source": "accounts", "host": "imap1"})
    assert failing == (1 if level is None else 0), "a failing account is always exported"
    assert_sources_sum_to_the_fleet(reg)


def test_reconfigure_moves_accounts_between_sources(tmp_path: Path) -> None:
    state, names = fleet_state(tmp_path)
    collector = collector_for(state, names, None, fleet_groups(names))
    moved = [(n, "staff", "imap1") for n in names]
    collector.configure(names, 10, True, {}, None, moved)
    _text, reg = collected(collector)
    get = reg.get_sample_value
    staff = {"source": "staff", "host": "imap1"}
    assert get("quotawatch_source_accounts_configured", staff) == len(names)
    students = {"source": "students", "host": "imap2"}
    assert get("quotawatch_source_accounts_configured", students) is None
    assert get("quotawatch_source_accounts_failing", {**staff, "reason": "auth"}) == 1
    assert_sources_sum_to_the_fleet(reg)


def test_a_state_database_without_the_groups_table_opens(tmp_path: Path) -> None:
    """A state database of an older version gains the table; its rows stay."""
    state = State(tmp_path)
    store(state, "old", 0.9)
    with state.transaction() as db:
        db.execute("DROP TABLE account_groups")
    state.close()
    again = State(tmp_path)
    again.set_account_groups([("old", "accounts", "mail.example.org")])
    (summary,) = again.source_summaries((0.5, 1.0), None)
    got = (summary.source, summary.host, summary.configured, summary.checked)
    assert got == ("accounts", "mail.example.org", 1, 1)
    assert summary.at_or_below == (0, 1) and summary.count == 1


def test_series_budget_at_two_thousand_accounts_with_the_default(tmp_path: Path) -> None:
    from quotawatch.config import Metrics

    state = State(tmp_path)
    names = [f"u{i:04d}" for i in range(2000)]
    for i, name in enumerate(names):  # 5 % above 80 %, the rest spread below
        store(state, name, 0.85 if i % 20 == 0 else (i % 70) / 100)
    level = Metrics().per_account_level(len(names))
    assert level == 0.8
    _text, reg = collected(collector_for(state, names, level))
    series = sum(len(m.samples) for m in reg.collect())
    # 100 accounts above 80 %, 14 series each (8 + 2 per folder), plus ~70 fleet series;
    # all 2,000 accounts would be about 28,000
    assert series <= 100 * 14 + 100, series
    assert reg.get_sample_value("quotawatch_metrics_accounts_omitted") == 1900
    # split by 2 sources x 2 hosts: a fixed number of series more, whatever the fleet size
    groups = [(n, f"s{i % 2}", f"imap{i // 1000}") for i, n in enumerate(names)]
    text, reg = collected(collector_for(state, names, level, groups))
    split = sum(len(m.samples) for m in reg.collect())
    # per group: 6 buckets, gcount, gsum, used, limit, configured, checked, omitted
    assert split - series == 4 * 13, (series, split)
    assert_sources_sum_to_the_fleet(reg)
    promtool_check(text)


def test_rows_are_filled_for_reports_stored_before_they_existed(tmp_path: Path) -> None:
    state = State(tmp_path)
    store(state, "old", 0.9)
    with state.transaction() as db:
        db.execute("DELETE FROM metric_rows")
    state.close()
    again = State(tmp_path)
    assert [r[0] for r in again.metric_rows(0.8)] == ["old"]
    again.forget_accounts([])
    assert again.metric_rows() == []


def test_cycle_ends_when_every_account_had_its_turn() -> None:
    cycles = Cycles()
    cycles.restart(["a", "b"])
    cycles.checked("a", ["a", "b"])
    assert cycles.seconds() == 0.0
    cycles.checked("a", ["a", "b"])  # twice in a cycle does not end it
    assert cycles.pending == {"b"}
    cycles.checked("b", ["a", "b"])
    assert cycles.seconds() > 0.0 and cycles.pending == {"a", "b"}
