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


def collector_for(state: State, names: list[str], level: float | None) -> StateCollector:
    collector = StateCollector(state, Counters(), Histogram())
    collector.now = NOW.timestamp
    collector.configure(names, 10, True, {n: [("trash", "delete")] for n in names}, level)
    return collector


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
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian: prometheus)"
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
