"""A fleet through the daemon: accounts from doveadm, quota from one quotaGet per cycle, IMAP only where needed.

QW_FLEET_ACCOUNTS sets the fleet size (default 2,000, the issue's CI size; the benchmark uses 10,000).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.mail.connect import open_session
from quotawatch.mail.session import MailboxSession
from quotawatch.service.daemon import Daemon
from quotawatch.service.fleet import phase
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from tests.support import assert_sources_sum_to_the_fleet

FLEET = int(os.environ.get("QW_FLEET_ACCOUNTS", "2000"))
FULL = 20  # accounts filled above imap_when_above


def message(i: int, size: int) -> bytes:
    head = f"From: a@example.org\r\nTo: b@example.org\r\nSubject: m{i}\r\n\r\n"
    return head.encode() + b"x" * (size - len(head) - 2) + b"\r\n"


@pytest.fixture(scope="module")
def fleet(dovecot_api: Dovecot) -> list[str]:
    prefix = f"fl{secrets.token_hex(2)}"
    names = [f"{prefix}-{i:05d}" for i in range(FLEET)]
    dovecot_api.add_users([(n, "pw", 100 * 1024, None) for n in names])
    when = datetime.now(UTC) - timedelta(days=2)
    for name in names[:FULL]:  # 80 KiB of 100 KiB
        dovecot_api.deliver_bulk(name, "INBOX", [(message(i, 20_000), when, "S") for i in range(4)])
    return names


class Logins:
    """Counts the IMAP logins the daemon makes (a real session each time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: Counter[str] = Counter()

    def __call__(self, account: Account, password: SecretStr) -> MailboxSession:
        with self.lock:
            self.names[account.name] += 1
        return open_session(account, password)


def write(
    tmp_path: Path, server: Dovecot, names: list[str], folders_every: str = "1d", mask: str = "*"
) -> Path:
    mask = names[0].rsplit("-", 1)[0] + "-" + mask
    config: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "schedule": {"interval": "15m", "jitter": "0s", "concurrency": 8, "cleanup": False},
        "account_sources": [{
            "name": "fleet",
            "doveadm": {"url": server.doveadm_url, "api_key_file": str(server.doveadm_key_file),
                        "ca_file": str(server.ca_file), "user_mask": mask},
            "template": {"host": "127.0.0.1", "port": server.imaps_port,
                         "ca_file": str(server.ca_file), "username": f"{{user}}*{server.master_user}",
                         "password_env": "QW_FLEET_ADMIN", "quota_source": "doveadm",
                         "imap_when_above": "70%", "folders_every": folders_every},
        }],
    }  # fmt: skip
    path = tmp_path / "quotawatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_once(path: Path, logins: Logins) -> tuple[Daemon, float, CollectorRegistry]:
    daemon = Daemon(str(path), factory=logins)
    started = time.monotonic()
    daemon.start(once=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(daemon.collector)
    try:
        results = daemon.once_results(len(daemon.runtime.accounts), lambda: False)
        seconds = time.monotonic() - started
        exposition = generate_latest(registry)  # while the state is open
    finally:
        daemon.stop()
    assert len(results) == len(daemon.runtime.accounts)
    frozen = CollectorRegistry(auto_describe=False)
    frozen.register(_Frozen(exposition.decode()))
    return daemon, seconds, frozen


class _Frozen:
    """The families of one scrape, parsed back (so they can be read after the daemon stopped)."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def write_split(tmp_path: Path, server: Dovecot, names: list[str], extra: list[str]) -> Path:
    """The fleet from two doveadm sources on two host names (one server: 127.0.0.1 and
    localhost), plus explicit accounts on both hosts."""
    prefix = names[0].rsplit("-", 1)[0]

    def source(name: str, mask: str, host: str) -> dict[str, Any]:
        return {
            "name": name,
            "doveadm": {"url": server.doveadm_url, "api_key_file": str(server.doveadm_key_file),
                        "ca_file": str(server.ca_file), "user_mask": f"{prefix}-{mask}"},
            "template": {"host": host, "port": server.imaps_port, "ca_file": str(server.ca_file),
                         "username": f"{{user}}*{server.master_user}",
                         "password_env": "QW_FLEET_ADMIN", "quota_source": "doveadm",
                         "imap_when_above": "70%", "folders_every": "1d"},
        }  # fmt: skip

    explicit = [{"name": name, "host": host, "port": server.imaps_port,
                 "ca_file": str(server.ca_file), "username": f"{name}*{server.master_user}",
                 "password_env": "QW_FLEET_ADMIN"}
                for name, host in zip(extra, ("127.0.0.1", "localhost"), strict=True)]  # fmt: skip
    config: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "schedule": {"interval": "15m", "jitter": "0s", "concurrency": 8, "cleanup": False},
        "accounts": explicit,
        "account_sources": [source("staff", "00*", "127.0.0.1"),
                            source("students", "01*", "localhost")],
    }  # fmt: skip
    path = tmp_path / "quotawatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def admin_password(dovecot_api: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("QW_FLEET_ADMIN", dovecot_api.master_password)
    yield


def test_every_account_once_per_cycle_with_one_quota_call(
    dovecot_api: Dovecot, fleet: list[str], tmp_path: Path, admin_password: None
) -> None:
    path = write(tmp_path, dovecot_api, fleet)
    began = time.time()

    def spread_due() -> set[str]:
        """Quiet accounts whose own point in folders_every (1d) may have come by now."""
        return {n for n in fleet[FULL:] if phase(n) * 86400 <= time.time() - began + 1}

    logins = Logins()
    first, seconds1, _ = run_once(path, logins)
    assert set(first.runtime.accounts) == set(fleet)
    # only the accounts above imap_when_above log in; the others' first folder reads are
    # spread over folders_every (1d), each at its own point: a handful may fall in the run
    due = spread_due()
    assert set(fleet[:FULL]) <= set(logins.names) <= set(fleet[:FULL]) | due
    assert set(logins.names.values()) == {1}
    assert first.quotas.calls == 1

    logins2 = Logins()
    second, seconds2, metrics = run_once(path, logins2)
    due = spread_due()
    assert set(fleet[:FULL]) <= set(logins2.names) <= set(fleet[:FULL]) | due, (
        "only accounts above imap_when_above (or at their point in folders_every) log in"
    )
    assert second.quotas.calls == 1, "one quotaGet for the whole cycle"
    state = State(tmp_path / "state")
    reports = state.last_reports()
    assert set(reports) == set(fleet), "every account was checked in the cycle"
    full = reports[fleet[0]][2]
    assert full["origin"]["quota"] == "imap" and full["usage_ratio"] >= 0.7
    quiet_name = next(n for n in reversed(fleet) if n not in logins.names | logins2.names)
    quiet = reports[quiet_name][2]
    assert quiet["ok"] and quiet["origin"] == {"quota": "doveadm", "folders": None,
                                               "folders_checked_at": None}  # fmt: skip
    assert quiet["quota"][0]["limit"] == 100 * 1024
    # metrics within the series budget: default per_account beyond 1,000 accounts is above 80%
    series = sum(len(m.samples) for m in metrics.collect())
    exported = 0 if FLEET > 1000 else FLEET
    assert metrics.get_sample_value("quotawatch_metrics_accounts_omitted") == FLEET - exported
    assert series < 5000, series
    assert metrics.get_sample_value("quotawatch_accounts_configured") == FLEET
    assert metrics.get_sample_value("quotawatch_source_accounts", {"source": "fleet"}) == FLEET
    assert metrics.get_sample_value("quotawatch_fleet_usage_ratio_gcount") == FLEET
    assert metrics.get_sample_value("quotawatch_cycle_duration_seconds") > 0
    print(f"\n{FLEET} accounts: {series} series exported; ", end="")
    print(f"\n{FLEET} accounts: first cycle ({len(logins.names)} IMAP logins) {seconds1:.1f}s, "
          f"second cycle ({len(logins2.names)} IMAP logins) {seconds2:.1f}s")  # fmt: skip

    # folders_every 1s: every account's first folder read is due; the first 100 accounts only
    write(tmp_path, dovecot_api, fleet, folders_every="1s", mask="000*")
    time.sleep(1)
    logins3 = Logins()
    run_once(path, logins3)
    assert set(logins3.names) == set(fleet[:100]), "folders are read once per folders_every"
    after = State(tmp_path / "state").last_reports()[fleet[99]][2]
    assert after["origin"] == {"quota": "imap", "folders": "imap", "folders_checked_at": None}
    assert after["folders"]
    logins4 = Logins()
    write(tmp_path, dovecot_api, fleet, folders_every="1d", mask="000*")
    run_once(path, logins4)
    assert set(logins4.names) == set(fleet[:FULL]), "folders fresh: no login below the level"
    stored = State(tmp_path / "state").last_reports()[fleet[99]][2]
    assert stored["origin"]["folders"] == "stored" and stored["folders"] == after["folders"]


def test_source_series_split_the_fleet_and_sum_to_it(
    dovecot_api: Dovecot, fleet: list[str], tmp_path: Path, admin_password: None
) -> None:
    present = f"{fleet[0].rsplit('-', 1)[0]}-x-present"
    dovecot_api.add_users([(present, "pw", 100 * 1024, None)])
    missing = f"{present[:-8]}-missing"  # not a user: its check fails with reason auth
    path = write_split(tmp_path, dovecot_api, fleet, [present, missing])
    daemon, _seconds, metrics = run_once(path, Logins())
    staff = [n for n in fleet if n.rsplit("-", 1)[1].startswith("00")]
    students = [n for n in fleet if n.rsplit("-", 1)[1].startswith("01")]
    assert set(daemon.runtime.accounts) == {*staff, *students, present, missing}
    get = metrics.get_sample_value
    groups = {
        ("staff", "127.0.0.1"): len(staff),
        ("students", "localhost"): len(students),
        ("accounts", "127.0.0.1"): 1,
        ("accounts", "localhost"): 1,
    }
    for (source, host), count in groups.items():
        labels = {"source": source, "host": host}
        assert get("quotawatch_source_accounts_configured", labels) == count, labels
        assert get("quotawatch_source_accounts_checked", labels) == count, labels
    failing = [(s.labels, s.value) for m in metrics.collect() for s in m.samples
               if s.name == "quotawatch_source_accounts_failing"]  # fmt: skip
    assert [(labels["source"], labels["host"], value) for labels, value in failing] == [
        ("accounts", "localhost", 1)
    ], "only the explicit account that is no user fails"
    full = sum(1 for n in fleet[:FULL] if n in staff)  # the full accounts are the first ones
    staff_labels = {"source": "staff", "host": "127.0.0.1"}
    assert get("quotawatch_source_usage_ratio_gcount", staff_labels) == len(staff)
    assert get("quotawatch_source_usage_ratio_bucket", {**staff_labels, "le": "0.5"}) == (
        len(staff) - full
    )
    # every group's series sum to the fleet series; the split adds a fixed number of series
    assert_sources_sum_to_the_fleet(metrics)
    names = {m.name for m in metrics.collect()}
    source_series = sum(len(m.samples) for m in metrics.collect()
                        if m.name.startswith("quotawatch_source_") and m.samples
                        and "host" in m.samples[0].labels)  # fmt: skip
    assert source_series == 4 * 13 + 1, source_series  # 13 each, one failing reason
    series = sum(len(m.samples) for m in metrics.collect())
    assert series < 5000, series
    assert "quotawatch_source_usage_ratio" in names
    print(f"\n{len(daemon.runtime.accounts)} accounts, 2 sources + accounts: on 2 hosts: "
          f"{series} series, {source_series} of them per source and host")  # fmt: skip
