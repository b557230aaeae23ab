"""Prometheus metrics: a collector over the last stored results plus in-memory counters; scrapes never log in."""

from __future__ import annotations

import json
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from quotawatch import __version__
from quotawatch.service.fleet_metrics import (
    BANDS,
    FLEET_NAMES,
    RuntimeInfo,
    fleet_families,
    source_families,
)
from quotawatch.state import ROW_COLUMNS, State

if TYPE_CHECKING:  # prometheus_client is imported by the first scrape: `run --once` starts faster
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

#: error reasons pre-created in the fleet-wide ``quotawatch_errors_total`` (see errors.py)
REASONS = (
    "auth",
    "capability",
    "cleanup",
    "clock",
    "config",
    "connect",
    "internal",
    "plan",
    "protocol",
    "safety",
    "state",
    "temporary",
    "timeout",
    "tls",
)

#: counter families: name -> (HELP text, label names); anyone holding ``Counters`` may bump these
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "quotawatch_account_errors_total": (
        "Failed account jobs by cause (auth, connect, timeout, tls, ...), since the daemon started.",
        ("account", "reason"),
    ),
    "quotawatch_errors_total": (
        "Failed account jobs of the whole fleet by cause, since the daemon started.",
        ("reason",),
    ),
    "quotawatch_checks_total": ("Account checks by result (ok, failed, skipped).", ("result",)),
    "quotawatch_jobs_missed_total": (
        "Scheduled account jobs dropped because the pool was busy for longer than one interval.",
        (),
    ),
    "quotawatch_cleanup_deleted_messages_total": (
        "Messages removed from the server by cleanups (deleted, moved or archived), by rule and action.",
        ("account", "rule", "action"),
    ),
    "quotawatch_cleanup_freed_bytes_total": (
        "Bytes removed from the server by cleanups, by rule and action.",
        ("account", "rule", "action"),
    ),
    "quotawatch_cleanup_unconfirmed_total": (
        "Cleanup commits (IMAP STORE/EXPUNGE or MOVE, POP3 QUIT) sent without a confirmation; "
        "their messages are audited uncertain and reconciled at the next run.",
        ("account",),
    ),
    "quotawatch_warnings_sent_total": (
        "Quota warning mails sent, by threshold.",
        ("account", "threshold"),
    ),
    "quotawatch_warnings_failed_total": (
        "Quota warning mails that could not be sent, by threshold.",
        ("account", "threshold"),
    ),
    "quotawatch_fleet_cleanup_deleted_messages_total": (
        "Messages removed by cleanups of all accounts, by rule and action.",
        ("rule", "action"),
    ),
    "quotawatch_fleet_cleanup_freed_bytes_total": (
        "Bytes removed by cleanups of all accounts, by rule and action.",
        ("rule", "action"),
    ),
    "quotawatch_fleet_warnings_sent_total": (
        "Quota warning mails sent to all accounts, by threshold.",
        ("threshold",),
    ),
    "quotawatch_fleet_warnings_failed_total": (
        "Quota warning mails to all accounts that could not be sent, by threshold.",
        ("threshold",),
    ),
}
#: per-account counters with a fleet twin that is bumped (and pre-created) along with them
TWINS = {
    "quotawatch_cleanup_deleted_messages_total": "quotawatch_fleet_cleanup_deleted_messages_total",
    "quotawatch_cleanup_freed_bytes_total": "quotawatch_fleet_cleanup_freed_bytes_total",
    "quotawatch_warnings_sent_total": "quotawatch_fleet_warnings_sent_total",
    "quotawatch_warnings_failed_total": "quotawatch_fleet_warnings_failed_total",
}

GAUGES: dict[str, str] = {
    "quotawatch_account_up": "1 if the last check of the account succeeded; 0 if it failed or has not run yet.",
    "quotawatch_last_success_timestamp_seconds": "Unix time of the last successful check (0 = never).",
    "quotawatch_last_check_timestamp_seconds": "Unix time of the last check, successful or not.",
    "quotawatch_last_check_duration_seconds": "How long the last check of the account took.",
    "quotawatch_quota_usage_bytes": "Storage used in the quota root, in bytes.",
    "quotawatch_quota_limit_bytes": "Storage limit of the quota root, in bytes.",
    "quotawatch_quota_usage_messages": "Messages counted against the quota root.",
    "quotawatch_quota_limit_messages": "Message limit of the quota root.",
    "quotawatch_quota_usage_ratio": "Usage of the fullest quota resource as a fraction of its limit (1 = full).",
    "quotawatch_folder_size_bytes": "Size of one of the account's largest folders, in bytes.",
    "quotawatch_folder_messages": "Messages in one of the account's largest folders.",
    "quotawatch_plan_pending_bytes": "Bytes the retention rules still want to free after the last cycle.",
    "quotawatch_oauth2_token_expiry_timestamp_seconds": "Unix time when the account's stored "
    "OAuth2 refresh token lapses if unused (last use + 90 days; delegated sign-in only); 0 = none stored.",
    "quotawatch_accounts_configured": "Accounts in the loaded config.",
    "quotawatch_cleanup_enabled": "1 if rules are applied on schedule (schedule.cleanup), 0 for monitor-only.",
    "quotawatch_scheduler_running": "1 while the scheduler runs (what /healthz reports).",
    "quotawatch_build_info": "Always 1; the labels name the quotawatch and Python versions.",
}

HISTOGRAM = "quotawatch_check_duration_seconds"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: every metric family name this module exports
METRIC_NAMES = frozenset({*COUNTERS, *GAUGES, HISTOGRAM, *FLEET_NAMES})


class Counters:
    """Thread-safe in-memory counters of the families in ``COUNTERS``, keyed by label values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name!r}")
        wanted = COUNTERS[name][1]
        if set(labels) != set(wanted):
            raise ValueError(
                f"{name} takes labels {', '.join(wanted) or 'none'}, got {sorted(labels)}"
            )
        return tuple(str(labels[k]) for k in wanted)

    def inc(self, name: str, labels: Mapping[str, str], value: float = 1) -> None:
        """Add ``value`` (>= 0) to the series; creates it on first use."""
        if value < 0:
            raise ValueError("counters only go up")
        key = self._key(name, labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + value
        if name in TWINS:
            self.inc(TWINS[name], {k: v for k, v in labels.items() if k != "account"}, value)

    def preset(self, name: str, labels: Mapping[str, str]) -> None:
        """Create the series at 0 if it does not exist yet (so dashboards show 0, not no data)."""
        key = self._key(name, labels)
        with self._lock:
            self._values[name].setdefault(key, 0.0)
        if name in TWINS:
            self.preset(TWINS[name], {k: v for k, v in labels.items() if k != "account"})

    def forget_accounts(self, keep: Iterable[str]) -> None:
        """Drop every series whose ``account`` label is not in ``keep``."""
        keep_set = set(keep)
        with self._lock:
            for name, (_help, labelnames) in COUNTERS.items():
                if "account" not in labelnames:
                    continue
                pos = labelnames.index("account")
                series = self._values[name]
                for key in [k for k in series if k[pos] not in keep_set]:
                    del series[key]

    def collect(self, accounts: frozenset[str] | None = None) -> Iterator[Metric]:
        """Every series, or (``accounts``) only those of these accounts and the fleet's."""
        from prometheus_client.metrics_core import CounterMetricFamily

        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        for name, (doc, labelnames) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=labelnames)
            pos = labelnames.index("account") if "account" in labelnames else None
            for key, value in sorted(snapshot[name].items()):
                if accounts is None or pos is None or key[pos] in accounts:
                    family.add_metric(list(key), value)
            yield family


class Histogram:
    """A label-less histogram of check durations."""

    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self._lock = threading.Lock()
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if seconds <= b), len(self.bounds))
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def collect(self) -> Metric:
        from prometheus_client.metrics_core import HistogramMetricFamily

        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return HistogramMetricFamily(
            HISTOGRAM,
            "Time to log in and read quota and folder sizes of one account.",
            buckets=cumulative,
            sum_value=total,
        )


class StateCollector:
    """The custom collector: gauges from the reports stored in State, counters from memory."""

    def __init__(
        self,
        state: State,
        counters: Counters,
        histogram: Histogram,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self.state = state
        self.counters = counters
        self.histogram = histogram
        self.running = running
        self._lock = threading.Lock()
        self._accounts: tuple[str, ...] = ()
        self._configured: frozenset[str] = frozenset()
        self._top_folders = 10
        self._cleanup = True
        #: account -> refresh-token lapse time, read from the token cache (never a login)
        self.oauth2_expiry: Callable[[], Mapping[str, float]] = dict
        self._level: float | None = 0.0
        self.info = RuntimeInfo()
        #: the clock of the lag gauge (Unix seconds)
        self.now: Callable[[], float] = time.time

    def configure(
        self,
        accounts: Sequence[str],
        top_folders: int,
        cleanup: bool,
        rule_actions: Mapping[str, Sequence[tuple[str, str]]] | None = None,
        level: float | None = 0.0,
        groups: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Set the configured accounts (at start-up and after a reload) and pre-create their series.

        ``rule_actions`` maps an account to its (rule, action) pairs for the cleanup counters.
        ``level`` is from which usage accounts get their own series (0.0 = all accounts, which
        also pre-creates their counters; None = none; failing accounts always have theirs).
        ``groups`` gives (account, source, host) of the accounts for the per-source series
        (stored in the state database, not held in memory).
        """
        self.state.keep_totals(BANDS, level)
        self.state.set_account_groups(groups)
        with self._lock:
            self._accounts = tuple(accounts)
            self._configured = frozenset(self._accounts)
            self._top_folders = top_folders
            self._cleanup = cleanup
            self._level = level
        self.counters.forget_accounts(accounts)
        for account, pairs in (rule_actions or {}).items():
            for rule, action in pairs:
                labels = {"account": account, "rule": rule, "action": action}
                if level == 0.0:
                    self.counters.preset("quotawatch_cleanup_deleted_messages_total", labels)
                    self.counters.preset("quotawatch_cleanup_freed_bytes_total", labels)
                else:
                    fleet = {"rule": rule, "action": action}
                    self.counters.preset("quotawatch_fleet_cleanup_deleted_messages_total", fleet)
                    self.counters.preset("quotawatch_fleet_cleanup_freed_bytes_total", fleet)
        for account in accounts if level == 0.0 else ():
            self.counters.preset("quotawatch_cleanup_unconfirmed_total", {"account": account})
        for reason in REASONS:
            self.counters.preset("quotawatch_errors_total", {"reason": reason})
        for result in ("ok", "failed", "skipped"):
            self.counters.preset("quotawatch_checks_total", {"result": result})
        self.counters.preset("quotawatch_jobs_missed_total", {})

    def collect(self) -> Iterator[Metric]:
        """Per-account series of the accounts ``level`` selects (compact rows, read by SQL),
        then the fleet series; the work grows with the series exported."""
        from prometheus_client.metrics_core import GaugeMetricFamily

        with self._lock:
            accounts, top, cleanup = self._accounts, self._top_folders, self._cleanup
            configured, level = self._configured, self._level
        fams = {
            name: GaugeMetricFamily(name, doc, labels=_gauge_labels(name))
            for name, doc in GAUGES.items()
        }
        if level == 0.0:
            rows = {r[0]: r for r in self.state.metric_rows()}
            exported = configured
            for name in accounts:
                _account_samples(fams, name, rows.get(name), top)
        else:
            chosen = self.state.metric_rows(level) if level is not None else []
            rows = {r[0]: r for r in chosen if r[0] in configured}
            exported = frozenset(rows)
            for name in sorted(rows):
                _account_samples(fams, name, rows[name], top)
        lapses = self.oauth2_expiry()
        for name in sorted(configured & set(lapses)):  # few: OAuth2 accounts only
            fams["quotawatch_oauth2_token_expiry_timestamp_seconds"].add_metric(
                [name], lapses[name]
            )
        fams["quotawatch_accounts_configured"].add_metric([], len(accounts))
        fams["quotawatch_cleanup_enabled"].add_metric([], int(cleanup))
        fams["quotawatch_scheduler_running"].add_metric([], int(self.running()))
        fams["quotawatch_build_info"].add_metric([__version__, platform.python_version()], 1)
        yield from fams.values()
        yield from self.counters.collect(None if level == 0.0 else exported)
        yield self.histogram.collect()
        # kept in memory by the state (keep_totals): no pass over every account's row
        summary = self.state.fleet_summary(BANDS)
        omitted = len(configured) - len(exported)  # exported is a subset of configured
        yield from fleet_families(summary, REASONS, omitted, self.now(), self.info)
        yield from source_families(self.state.source_summaries(BANDS, level), level)


def _gauge_labels(name: str) -> list[str]:
    if name.startswith("quotawatch_quota_") and name != "quotawatch_quota_usage_ratio":
        return ["account", "root"]
    if name.startswith("quotawatch_folder_"):
        return ["account", "folder"]
    if name == "quotawatch_build_info":
        return ["version", "python"]
    if name in ("quotawatch_accounts_configured", "quotawatch_cleanup_enabled",
                "quotawatch_scheduler_running"):  # fmt: skip
        return []
    return ["account"]


_QUOTA_NAMES = {
    "STORAGE": ("quotawatch_quota_usage_bytes", "quotawatch_quota_limit_bytes"),
    "MESSAGE": ("quotawatch_quota_usage_messages", "quotawatch_quota_limit_messages"),
}


_COL = {name: i for i, name in enumerate(ROW_COLUMNS)}


def _account_samples(
    fams: dict[str, GaugeMetricFamily], name: str, row: Sequence[Any] | None, top: int
) -> None:
    """Add one account's samples from its metric row; series every account always has come first."""
    if row is None:
        for family in ("quotawatch_account_up", "quotawatch_last_success_timestamp_seconds",
                       "quotawatch_plan_pending_bytes"):  # fmt: skip
            fams[family].add_metric([name], 0)
        return
    fams["quotawatch_account_up"].add_metric([name], 1 if row[_COL["ok"]] else 0)
    fams["quotawatch_last_success_timestamp_seconds"].add_metric(
        [name], row[_COL["last_success"]] or 0
    )
    fams["quotawatch_plan_pending_bytes"].add_metric([name], row[_COL["pending_bytes"]] or 0)
    fams["quotawatch_last_check_timestamp_seconds"].add_metric([name], row[_COL["checked_at"]])
    fams["quotawatch_last_check_duration_seconds"].add_metric([name], row[_COL["duration"]] or 0)
    data = json.loads(row[_COL["detail"]])
    if row[_COL["ratio"]] is not None:
        data["usage_ratio"] = row[_COL["ratio"]]
    for q in data.get("quota") or ():
        names = _QUOTA_NAMES.get(str(q.get("resource", "")).upper())
        if names is None:
            continue
        fams[names[0]].add_metric([name, str(q["root"])], q["usage"])
        if q["limit"] > 0:
            fams[names[1]].add_metric([name, str(q["root"])], q["limit"])
    if data.get("usage_ratio") is not None:
        fams["quotawatch_quota_usage_ratio"].add_metric([name], data["usage_ratio"])
    for folder in (data.get("folders") or ())[:top]:
        fams["quotawatch_folder_size_bytes"].add_metric(
            [name, folder["name"]], folder["size_bytes"]
        )
        fams["quotawatch_folder_messages"].add_metric([name, folder["name"]], folder["messages"])
