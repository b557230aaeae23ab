"""Fleet series that stay small at any size: usage bands, sums, failures, sources, cycle time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quotawatch.service.directory import SourceStatus
from quotawatch.state import FleetSummary, SourceSummary

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: upper bounds of the usage bands of ``quotawatch_fleet_usage_ratio`` (fixed, so series stay few)
BANDS = (0.5, 0.8, 0.9, 0.95, 1.0)

FLEET_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "quotawatch_fleet_usage_bytes": ("Storage used by all accounts with a quota, in bytes.", ()),
    "quotawatch_fleet_limit_bytes": ("Sum of the storage limits of all accounts, in bytes.", ()),
    "quotawatch_fleet_accounts_failing": (
        "Accounts whose last check failed, by reason (every reason present, 0 if none).",
        ("reason",),
    ),
    "quotawatch_fleet_accounts_checked": ("Accounts with a stored check result.", ()),
    "quotawatch_check_lag_seconds": (
        "Age of the oldest stored check of a configured account (how stale the stalest number is).",
        (),
    ),
    "quotawatch_cycle_duration_seconds": (
        "How long the last complete cycle took: from its start until every configured account "
        "was checked once (0 until the first cycle completes).",
        (),
    ),
    "quotawatch_metrics_accounts_omitted": (
        "Configured accounts without per-account series (metrics.per_account).",
        (),
    ),
    "quotawatch_source_up": ("1 if the account source's last read succeeded, else 0.", ("source",)),
    "quotawatch_source_accounts": (
        "Users in the account source's current list (the last good one while reads fail).",
        ("source",),
    ),
    "quotawatch_source_last_success_timestamp_seconds": (
        "Unix time of the source's last successful read (0 = never).",
        ("source",),
    ),
    "quotawatch_doveadm_quota_duration_seconds": (
        "How long the last quotaGet of all users took, per doveadm.",
        ("doveadm",),
    ),
}
FLEET_HISTOGRAM = "quotawatch_fleet_usage_ratio"

#: the fleet split by account source and mail host: a fixed number of series per (source, host)
SOURCE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "quotawatch_source_usage_bytes": (
        "Storage used by the accounts of the source on the mail host, in bytes.",
        ("source", "host"),
    ),
    "quotawatch_source_limit_bytes": (
        "Sum of the storage limits of the accounts of the source on the mail host, in bytes.",
        ("source", "host"),
    ),
    "quotawatch_source_accounts_failing": (
        "Accounts of the source on the mail host whose last check failed, by reason (only "
        "reasons with failing accounts; quotawatch_fleet_accounts_failing has every reason).",
        ("source", "host", "reason"),
    ),
    "quotawatch_source_accounts_configured": (
        'Configured accounts of the source on the mail host (source="accounts": those listed '
        "under accounts: in the config).",
        ("source", "host"),
    ),
    "quotawatch_source_accounts_checked": (
        "Accounts of the source on the mail host with a stored check result.",
        ("source", "host"),
    ),
    "quotawatch_source_accounts_omitted": (
        "Accounts of the source on the mail host without per-account series (metrics.per_account).",
        ("source", "host"),
    ),
}
SOURCE_HISTOGRAM = "quotawatch_source_usage_ratio"
FLEET_NAMES = frozenset({*FLEET_GAUGES, FLEET_HISTOGRAM, *SOURCE_GAUGES, SOURCE_HISTOGRAM})


@dataclass
class RuntimeInfo:
    """What the daemon knows beyond the stored rows (sources, cycle, doveadm timings)."""

    sources: Callable[[], Sequence[SourceStatus]] = lambda: ()
    cycle_seconds: Callable[[], float] = lambda: 0.0
    doveadm_seconds: Callable[[], dict[str, float]] = dict


def fleet_families(
    summary: FleetSummary,
    reasons: Iterable[str],
    omitted: int,
    now: float,
    info: RuntimeInfo,
) -> Iterator[Metric]:
    """The fleet families from ``State.fleet_summary`` and the runtime info."""
    from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily

    fams = {name: GaugeMetricFamily(name, doc, labels=list(labels))
            for name, (doc, labels) in FLEET_GAUGES.items()}  # fmt: skip
    buckets = [(str(b), float(n)) for b, n in zip(BANDS, summary.at_or_below, strict=True)]
    buckets.append(("+Inf", float(summary.count)))
    yield GaugeHistogramMetricFamily(
        FLEET_HISTOGRAM,
        "Accounts by usage of their fullest quota resource (le = at or below), with gcount "
        "accounts and gsum the sum of their ratios.",
        buckets=buckets,
        gsum_value=summary.ratio_sum,
    )
    fams["quotawatch_fleet_usage_bytes"].add_metric([], summary.used_bytes)
    fams["quotawatch_fleet_limit_bytes"].add_metric([], summary.limit_bytes)
    for reason in sorted({*reasons, *summary.failing}):
        count = summary.failing.get(reason, 0)
        fams["quotawatch_fleet_accounts_failing"].add_metric([reason], count)
    fams["quotawatch_fleet_accounts_checked"].add_metric([], summary.rows)
    oldest = summary.oldest_check
    lag = max(0.0, now - oldest) if oldest is not None else 0.0
    fams["quotawatch_check_lag_seconds"].add_metric([], lag)
    fams["quotawatch_cycle_duration_seconds"].add_metric([], info.cycle_seconds())
    fams["quotawatch_metrics_accounts_omitted"].add_metric([], omitted)
    for source in info.sources():
        fams["quotawatch_source_up"].add_metric([source.label], int(source.ok))
        fams["quotawatch_source_accounts"].add_metric([source.label], source.users)
        fams["quotawatch_source_last_success_timestamp_seconds"].add_metric(
            [source.label], source.last_success or 0
        )
    for doveadm, seconds in sorted(info.doveadm_seconds().items()):
        fams["quotawatch_doveadm_quota_duration_seconds"].add_metric([doveadm], seconds)
    yield from fams.values()


def source_families(summaries: Sequence[SourceSummary], level: float | None) -> Iterator[Metric]:
    """The fleet split by source and host, from ``State.source_summaries`` (``level``: the
    per_account level, 0.0 = every account has its series, None = none has)."""
    from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily

    fams = {name: GaugeMetricFamily(name, doc, labels=list(labels))
            for name, (doc, labels) in SOURCE_GAUGES.items()}  # fmt: skip
    histogram = GaugeHistogramMetricFamily(
        SOURCE_HISTOGRAM,
        "Accounts of the source on the mail host by usage of their fullest quota resource "
        "(le = at or below), with gcount accounts and gsum the sum of their ratios.",
        labels=["source", "host"],
    )
    for s in summaries:
        group = [s.source, s.host]
        buckets = [(str(b), float(n)) for b, n in zip(BANDS, s.at_or_below, strict=True)]
        buckets.append(("+Inf", float(s.count)))
        histogram.add_metric(group, buckets, s.ratio_sum)
        fams["quotawatch_source_usage_bytes"].add_metric(group, s.used_bytes)
        fams["quotawatch_source_limit_bytes"].add_metric(group, s.limit_bytes)
        for reason, count in sorted(s.failing.items()):
            fams["quotawatch_source_accounts_failing"].add_metric([*group, reason], count)
        fams["quotawatch_source_accounts_configured"].add_metric(group, s.configured)
        fams["quotawatch_source_accounts_checked"].add_metric(group, s.checked)
        exported = s.configured if level == 0.0 else 0 if level is None else s.exported
        fams["quotawatch_source_accounts_omitted"].add_metric(group, s.configured - exported)
    yield histogram
    yield from fams.values()


@dataclass
class Cycles:
    """Measures cycles: one starts with every configured account pending and ends when each
    was checked once (a skipped or failed check counts: the account had its turn)."""

    pending: set[str] = field(default_factory=set)
    started: float = 0.0
    last_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def restart(self, accounts: Iterable[str]) -> None:
        with self._lock:
            self.pending = set(accounts)
            self.started = time.monotonic()

    def forget(self, keep: Iterable[str]) -> None:
        with self._lock:
            self.pending &= set(keep)

    def checked(self, account: str, accounts: Iterable[str]) -> None:
        with self._lock:
            self.pending.discard(account)
            if self.pending:
                return
            now = time.monotonic()
            self.last_seconds = now - self.started
            self.pending = set(accounts)
            self.started = now

    def seconds(self) -> float:
        with self._lock:
            return self.last_seconds
