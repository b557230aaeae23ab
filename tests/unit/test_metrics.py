"""Metrics: the collector over stored results, the counters, and the /metrics + /healthz endpoint."""

from __future__ import annotations

import base64
import gzip
import http.client
import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from quotawatch.config import Account, Config, Metrics
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import AuthError
from quotawatch.model import FolderInfo, QuotaResource
from quotawatch.service.http import MetricsServer
from quotawatch.service.jobs import run_account
from quotawatch.service.metrics import METRIC_NAMES, Counters, Histogram, StateCollector
from quotawatch.state import State
from quotawatch.warnings.notify import Counters as NotifyCounters

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
PASSWORD = "s3cret-Pa55word-never-shown"
MiB = 1024 * 1024


class FakeSession:
    """An in-memory MailboxSession: quota and folders only (no server, no network)."""

    protocol = "imap"
    deferred_deletes = False

    def __init__(
        self, account: str, quota: tuple[QuotaResource, ...], folders: tuple[FolderInfo, ...]
    ) -> None:
        self.account = account
        self._quota = quota
        self._folders = folders

    def capabilities(self) -> frozenset[str]:
        return frozenset({"IMAP4REV1", "QUOTA"})

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        return self._quota, ()

    def folders(self) -> tuple[FolderInfo, ...]:
        return self._folders

    def close(self) -> None:
        pass


FOLDERS = (
    *(FolderInfo(f"F{i:02d}", i, i * 1000) for i in range(12)),
    FolderInfo("INBOX", 5, 3 * MiB),
)
QUOTA = (
    QuotaResource("User quota", "STORAGE", 5 * MiB, 10 * MiB),
    QuotaResource("User quota", "MESSAGE", 80, 100),
)


def factory(account: Account, password: SecretStr) -> FakeSession:
    if account.name == "bob":
        raise AuthError(account.name, "login refused: [AUTHENTICATIONFAILED]")
    return FakeSession(account.name, QUOTA, FOLDERS)


def account(name: str, secret: Path, rules: list[str] | None = None) -> Account:
    return Account(name=name, host="mail.example.org", username=name, password_file=secret,
                   rules=rules or [])  # fmt: skip


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text(PASSWORD)
    path.chmod(0o600)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    st = State(tmp_path / "state")
    yield st
    st.close()


def collect(state: State, names: list[str], *, top: int = 3, counters: Counters | None = None,
            running: bool = True) -> tuple[CollectorRegistry, StateCollector]:  # fmt: skip
    registry = CollectorRegistry()
    collector = StateCollector(state, counters or Counters(), Histogram(), lambda: running)
    collector.configure(names, top, True, {"alice": [("trash-30d", "delete")]})
    registry.register(collector)
    return registry, collector


def test_gauges_come_from_stored_results(state: State, secret: Path) -> None:
    config = Config()
    for name in ("alice", "bob"):
        run_account(account(name, secret), config, state, SecretCache(), cleanup=False,
                    now=NOW, factory=factory)  # fmt: skip
    reg, _ = collect(state, ["alice", "bob", "carol"])
    get = reg.get_sample_value
    assert get("quotawatch_account_up", {"account": "alice"}) == 1
    assert get("quotawatch_account_up", {"account": "bob"}) == 0
    assert get("quotawatch_account_up", {"account": "carol"}) == 0  # configured, not checked yet
    labels = {"account": "alice", "root": "User quota"}
    assert get("quotawatch_quota_usage_bytes", labels) == 5 * MiB
    assert get("quotawatch_quota_limit_bytes", labels) == 10 * MiB
    assert get("quotawatch_quota_usage_messages", labels) == 80
    assert get("quotawatch_quota_limit_messages", labels) == 100
    assert get("quotawatch_quota_usage_ratio", {"account": "alice"}) == 0.8  # fullest: messages
    assert get("quotawatch_last_success_timestamp_seconds", {"account": "alice"}) == NOW.timestamp()
    assert get("quotawatch_last_success_timestamp_seconds", {"account": "bob"}) == 0
    assert get("quotawatch_last_success_timestamp_seconds", {"account": "carol"}) == 0
    assert get("quotawatch_last_check_timestamp_seconds", {"account": "bob"}) == NOW.timestamp()
    assert get("quotawatch_plan_pending_bytes", {"account": "carol"}) == 0
    assert get("quotawatch_quota_usage_bytes", {"account": "bob", "root": "User quota"}) is None
    assert get("quotawatch_accounts_configured") == 3
    assert get("quotawatch_build_info", {"version": __import__("quotawatch").__version__,
                                         "python": __import__("platform").python_version()}) == 1  # fmt: skip


def test_folder_series_are_limited_to_the_largest(state: State, secret: Path) -> None:
    run_account(account("alice", secret), Config(), state, SecretCache(), cleanup=False, now=NOW,
                factory=factory)  # fmt: skip
    reg, _ = collect(state, ["alice"], top=3)
    folders = {
        s.labels["folder"]: s.value
        for m in reg.collect() if m.name == "quotawatch_folder_size_bytes" for s in m.samples
    }  # fmt: skip
    assert folders == {"INBOX": 3 * MiB, "F11": 11000, "F10": 10000}
    assert (
        reg.get_sample_value("quotawatch_folder_messages", {"account": "alice", "folder": "F11"})
        == 11
    )


def test_a_failed_check_keeps_the_last_known_quota(state: State, secret: Path) -> None:
    alice = account("alice", secret)
    run_account(alice, Config(), state, SecretCache(), cleanup=False, now=NOW, factory=factory)

    def broken(account: Account, password: SecretStr) -> FakeSession:
        raise AuthError(account.name, "login refused")

    later = NOW + timedelta(minutes=15)
    run_account(alice, Config(), state, SecretCache(), cleanup=False, now=later, factory=broken)
    reg, _ = collect(state, ["alice"])
    assert reg.get_sample_value("quotawatch_account_up", {"account": "alice"}) == 0
    assert reg.get_sample_value("quotawatch_quota_usage_ratio", {"account": "alice"}) == 0.8
    assert (
        reg.get_sample_value("quotawatch_last_success_timestamp_seconds", {"account": "alice"})
        == NOW.timestamp()
    )
    assert (
        reg.get_sample_value("quotawatch_last_check_timestamp_seconds", {"account": "alice"})
        == later.timestamp()
    )
    assert state.last_report("alice")[2]["stale"] is True  # type: ignore[index]


def test_counters_precreated_and_forgotten_with_their_account(state: State) -> None:
    counters = Counters()
    counters.inc("quotawatch_account_errors_total", {"account": "bob", "reason": "auth"})
    counters.inc("quotawatch_warnings_sent_total", {"account": "bob", "threshold": "90%"})
    reg, collector = collect(state, ["alice", "bob"], counters=counters)
    get = reg.get_sample_value
    labels = {"account": "alice", "rule": "trash-30d", "action": "delete"}
    assert get("quotawatch_cleanup_deleted_messages_total", labels) == 0
    assert get("quotawatch_cleanup_freed_bytes_total", labels) == 0
    assert get("quotawatch_errors_total", {"reason": "auth"}) == 0
    assert get("quotawatch_errors_total", {"reason": "state"}) == 0
    assert get("quotawatch_cleanup_unconfirmed_total", {"account": "alice"}) == 0
    assert get("quotawatch_account_errors_total", {"account": "bob", "reason": "auth"}) == 1
    assert get("quotawatch_warnings_sent_total", {"account": "bob", "threshold": "90%"}) == 1
    collector.configure(["alice"], 3, True)  # a reload removed bob
    text = generate_latest(reg).decode()
    assert 'account="bob"' not in text
    assert get("quotawatch_cleanup_freed_bytes_total", labels) == 0


def test_counters_check_names_and_labels() -> None:
    counters: NotifyCounters = Counters()  # what quotawatch.warnings.notify is handed
    counters.inc("quotawatch_warnings_failed_total", {"account": "a", "threshold": "80%"}, 2)
    with pytest.raises(KeyError):
        counters.inc("quotawatch_no_such_total", {})
    with pytest.raises(ValueError, match="takes labels account, threshold"):
        counters.inc("quotawatch_warnings_sent_total", {"account": "a"})
    with pytest.raises(ValueError):
        counters.inc("quotawatch_warnings_sent_total", {"account": "a", "threshold": "1"}, -1)


def test_histogram_buckets_are_cumulative() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 3.0):
        hist.observe(value)
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.collect().samples}
    assert samples[("quotawatch_check_duration_seconds_bucket", "0.1")] == 1
    assert samples[("quotawatch_check_duration_seconds_bucket", "1.0")] == 3
    assert samples[("quotawatch_check_duration_seconds_bucket", "+Inf")] == 4
    assert samples[("quotawatch_check_duration_seconds_count", None)] == 4
    assert samples[("quotawatch_check_duration_seconds_sum", None)] == pytest.approx(4.25)


def test_exposition_passes_promtool_and_names_units(state: State, secret: Path) -> None:
    for name in ("alice", "bob"):
        run_account(account(name, secret), Config(), state, SecretCache(), cleanup=False, now=NOW,
                    factory=factory)  # fmt: skip
    counters = Counters()
    counters.inc(
        "quotawatch_cleanup_freed_bytes_total",
        {"account": "alice", "rule": "trash-30d", "action": "delete"},
        4096,
    )
    reg, _ = collect(state, ["alice", "bob"], counters=counters)
    text = generate_latest(reg)
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert PASSWORD.encode() not in text
    exported = {m.name for m in reg.collect()}
    # prometheus_client strips _total from counter family names
    assert {n.removesuffix("_total") for n in METRIC_NAMES} == exported
    for name in METRIC_NAMES:
        if "bytes" in name or "seconds" in name:
            assert name.endswith(("_bytes", "_seconds", "_total")), name


# ---------------------------------------------------------------------- the HTTP endpoint
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def registry(state: State, secret: Path) -> CollectorRegistry:
    run_account(account("alice", secret), Config(), state, SecretCache(), cleanup=False, now=NOW,
                factory=factory)  # fmt: skip
    reg, _ = collect(state, ["alice"])
    return reg


def test_metrics_and_healthz_over_http(registry: CollectorRegistry) -> None:
    healthy = [True]
    server = MetricsServer(Metrics(listen=f"127.0.0.1:{free_port()}"), registry, lambda: healthy[0])
    host, port = server.start()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.status == 200
        body = gzip.decompress(resp.read()).decode()
        assert 'quotawatch_account_up{account="alice"} 1.0' in body
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok\n")
        healthy[0] = False
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 503
        resp.read()
        conn.request("GET", "/nothing")
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    finally:
        server.stop()


def test_tls_and_basic_auth(registry: CollectorRegistry, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    auth = tmp_path / "auth"
    auth.write_text("scrape-pass\n")
    auth.chmod(0o600)
    settings = Metrics(listen=f"127.0.0.1:{free_port()}", tls_cert_file=pem, tls_key_file=pem,
                       basic_auth_username="prom", basic_auth_password_file=auth)  # fmt: skip
    server = MetricsServer(settings, registry, lambda: True)
    host, port = server.start()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    try:

        def get(user_pass: str | None) -> int:
            conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
            headers = {}
            if user_pass is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
            conn.request("GET", "/metrics", headers=headers)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status

        assert get(None) == 401
        assert get("prom:wrong") == 401
        assert get("other:scrape-pass") == 401
        assert get("prom:scrape-pass") == 200
        untrusted = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            http.client.HTTPSConnection(host, port, context=untrusted, timeout=10).request(
                "GET", "/"
            )
    finally:
        server.stop()
