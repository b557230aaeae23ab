"""The daemon's scheduling: observed through APScheduler events in a queue, never by sleeping."""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobExecutionEvent,
    SchedulerEvent,
)
from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.errors import AuthError, ConnectError, TemporaryServerError
from quotawatch.model import FolderInfo, QuotaResource
from quotawatch.service.backoff import Backoff, backoff_delay, fingerprint
from quotawatch.service.daemon import Daemon
from quotawatch.service.sdnotify import Notifier, Watchdog, notify_address, watchdog_interval
from quotawatch.state import State
from tests.support import counter_value

WAIT = 20  # seconds to wait for an event before the test fails


class Server:
    """In-memory stand-in for the mail servers of the test accounts (behaviour per account name)."""

    def __init__(self) -> None:
        self.fail: dict[str, Exception] = {}
        self.block: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.logins: list[str] = []
        self.commands: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def factory(self, account: Account, password: SecretStr) -> Session:
        with self.lock:
            self.logins.append(account.name)
        if account.name in self.fail:
            raise self.fail[account.name]
        return Session(account.name, self)


class Session:
    protocol = "imap"
    deferred_deletes = False

    def __init__(self, account: str, server: Server) -> None:
        self.account = account
        self.server = server
        self.log = server.commands.setdefault(account, [])

    def capabilities(self) -> frozenset[str]:
        return frozenset({"IMAP4REV1", "QUOTA"})

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        self.log.append("quota")
        if self.account in self.server.block:
            self.server.entered.setdefault(self.account, threading.Event()).set()
            assert self.server.block[self.account].wait(WAIT)
        return (QuotaResource("", "STORAGE", 100, 1000),), ()

    def folders(self) -> tuple[FolderInfo, ...]:
        self.log.append("folders")
        return (FolderInfo("INBOX", 1, 100),)

    def close(self) -> None:
        self.log.append("close")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def write_config(tmp_path: Path, names: list[str], **schedule: Any) -> Path:
    secret = tmp_path / "pw"
    secret.write_text("password")
    secret.chmod(0o600)
    accounts = [{"name": n, "host": "mail.example.org", "username": n, "password_file": str(secret)}
                for n in names]  # fmt: skip
    data = {"state_dir": str(tmp_path / "state"), "accounts": accounts,
            "schedule": {"interval": "1h", "jitter": "0s", "concurrency": 4, **schedule}}  # fmt: skip
    path = tmp_path / "quotawatch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    for event in srv.block.values():
        event.set()


def started(daemon: Daemon, *, once: bool = False) -> queue.Queue[SchedulerEvent]:
    """Start paused, attach a listener, resume: no event can be missed."""
    events: queue.Queue[SchedulerEvent] = queue.Queue()
    daemon.start(once=once, paused=True)
    daemon.scheduler.add_listener(events.put)
    daemon.scheduler.resume()
    return events


def wait_for(events: queue.Queue[SchedulerEvent], code: int, job_ids: set[str]) -> dict[str, Any]:
    """Take events until each of ``job_ids`` produced one with ``code``; return them by job id."""
    seen: dict[str, Any] = {}
    while set(seen) != job_ids:
        event = events.get(timeout=WAIT)
        if event.code == code and getattr(event, "job_id", None) in job_ids:
            seen[event.job_id] = event  # type: ignore[attr-defined]
    return seen


def test_once_runs_every_account_and_failures_stay_alone(tmp_path: Path, server: Server) -> None:
    server.fail["bob"] = AuthError("bob", "login refused")
    server.fail["carol"] = ConnectError("carol", "connection refused")
    daemon = Daemon(str(write_config(tmp_path, ["alice", "bob", "carol"])), factory=server.factory)
    events = started(daemon, once=True)
    done = wait_for(events, EVENT_JOB_EXECUTED, {"alice", "bob", "carol"})
    results = {name: e.retval for name, e in done.items()}
    assert results["alice"].ok and results["alice"].report.snapshot.folders[0].name == "INBOX"
    assert results["bob"].report.reason == "auth"
    assert results["carol"].report.reason == "connect"
    assert sorted(server.logins) == ["alice", "bob", "carol"]
    assert (
        counter_value(
            daemon.counters, "quotawatch_account_errors_total", {"account": "bob", "reason": "auth"}
        )
        == 1
    )
    assert counter_value(daemon.counters, "quotawatch_errors_total", {"reason": "connect"}) == 1
    assert counter_value(daemon.counters, "quotawatch_checks_total", {"result": "ok"}) == 1
    assert server.commands["alice"] == ["quota", "folders", "close"]
    assert daemon.stop(grace=5)


def test_a_slow_account_does_not_delay_the_others(tmp_path: Path, server: Server) -> None:
    server.block["0-slow"] = threading.Event()
    server.entered["0-slow"] = threading.Event()
    path = write_config(tmp_path, ["0-slow", "a", "b", "c"], concurrency=2)
    daemon = Daemon(str(path), factory=server.factory)
    events = started(daemon, once=True)
    # jobs due in the same second may start in any order: wait until the slow one holds its
    # worker (it may have been picked last), then the others still finish on the other one
    assert server.entered["0-slow"].wait(WAIT)
    wait_for(events, EVENT_JOB_EXECUTED, {"a", "b", "c"})
    assert server.commands["0-slow"] == ["quota"]
    server.block["0-slow"].set()
    done = wait_for(events, EVENT_JOB_EXECUTED, {"0-slow"})
    assert done["0-slow"].retval.ok
    assert daemon.stop(grace=5)


def test_an_account_is_never_checked_twice_at_once(tmp_path: Path, server: Server) -> None:
    server.block["slow"] = threading.Event()
    daemon = Daemon(str(write_config(tmp_path, ["slow"], interval="1m")), factory=server.factory)
    events = started(daemon)
    assert server.entered.setdefault("slow", threading.Event()).wait(WAIT)
    job = daemon.scheduler.get_job("slow")
    job.modify(next_run_time=datetime.now(UTC))  # the next run comes while the first still runs
    wait_for(events, EVENT_JOB_MAX_INSTANCES, {"slow"})
    assert server.logins == ["slow"]
    job = daemon.scheduler.get_job("slow")
    assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 60)
    server.block["slow"].set()
    assert daemon.stop(grace=5)


def test_backoff_delay_doubles_up_to_a_day() -> None:
    interval = timedelta(minutes=15)
    delays = [backoff_delay(n, interval) for n in range(1, 9)]
    assert delays[:4] == [timedelta(minutes=m) for m in (30, 60, 120, 240)]
    assert delays[-1] == timedelta(hours=24)
    assert backoff_delay(1, timedelta(days=2)) == timedelta(days=2)  # never below the interval


def test_auth_failures_back_off_and_success_resets(tmp_path: Path, server: Server) -> None:
    clock = Clock()
    server.fail["bob"] = AuthError("bob", "login refused")
    path = write_config(tmp_path, ["bob"], interval="15m")
    daemon = Daemon(str(path), factory=server.factory, clock=clock)
    daemon.start(paused=True)
    assert daemon.run_job("bob") is not None
    backoff = Backoff.load(daemon.state, "bob", fingerprint(daemon.runtime.accounts["bob"]))
    assert backoff is not None and backoff.until == clock.now + timedelta(minutes=30)
    clock.now += timedelta(minutes=15)
    assert daemon.run_job("bob") is None  # skipped: no login attempt
    assert server.logins == ["bob"]
    assert counter_value(daemon.counters, "quotawatch_checks_total", {"result": "skipped"}) == 1
    clock.now += timedelta(minutes=15)
    assert daemon.run_job("bob") is not None
    assert len(server.logins) == 2
    backoff = Backoff.load(daemon.state, "bob", fingerprint(daemon.runtime.accounts["bob"]))
    assert backoff is not None and backoff.failures == 2
    assert backoff.until == clock.now + timedelta(hours=1)
    del server.fail["bob"]
    clock.now += timedelta(hours=1)
    result = daemon.run_job("bob")
    assert result is not None and result.ok
    assert Backoff.load(daemon.state, "bob", fingerprint(daemon.runtime.accounts["bob"])) is None
    assert daemon.stop(grace=5)


def test_backoff_ends_when_the_password_file_changes(tmp_path: Path, server: Server) -> None:
    clock = Clock()
    server.fail["bob"] = TemporaryServerError("bob", "[IN-USE] mailbox locked")  # backs off too
    path = write_config(tmp_path, ["bob"])
    daemon = Daemon(str(path), factory=server.factory, clock=clock)
    daemon.start(paused=True)
    daemon.run_job("bob")
    assert daemon.run_job("bob") is None
    secret = tmp_path / "pw"
    stat = secret.stat()
    secret.write_text("new password")
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert daemon.run_job("bob") is not None
    assert daemon.stop(grace=5)


def test_connect_errors_do_not_back_off(tmp_path: Path, server: Server) -> None:
    server.fail["dead"] = ConnectError("dead", "connection refused")
    daemon = Daemon(str(write_config(tmp_path, ["dead"])), factory=server.factory, clock=Clock())
    daemon.start(paused=True)
    daemon.run_job("dead")
    daemon.run_job("dead")
    assert server.logins == ["dead", "dead"]
    assert daemon.stop(grace=5)


def test_reload_adds_removes_and_reschedules(tmp_path: Path, server: Server) -> None:
    path = write_config(tmp_path, ["alice", "bob"])
    daemon = Daemon(str(path), factory=server.factory)
    daemon.start(paused=True)
    daemon.counters.inc("quotawatch_account_errors_total", {"account": "bob", "reason": "auth"})
    assert {j.id for j in daemon.scheduler.get_jobs()} == {"alice", "bob"}
    before = daemon.scheduler.get_job("alice").trigger

    data = yaml.safe_load(path.read_text())
    data["accounts"] = [dict(data["accounts"][0], host="imap.example.org"),
                        dict(data["accounts"][0], name="carol", username="carol")]  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    assert daemon.reload()
    assert {j.id for j in daemon.scheduler.get_jobs()} == {"alice", "carol"}
    assert daemon.scheduler.get_job("alice").trigger is not before
    assert daemon.runtime.accounts["alice"].host == "imap.example.org"
    assert (
        counter_value(
            daemon.counters, "quotawatch_account_errors_total", {"account": "bob", "reason": "auth"}
        )
        is None
    )

    path.write_text("accounts:\n  - name: broken\n    tls: sometimes\n")
    assert not daemon.reload()
    assert {j.id for j in daemon.scheduler.get_jobs()} == {"alice", "carol"}
    assert set(daemon.runtime.accounts) == {"alice", "carol"}
    assert daemon.stop(grace=5)


def test_stop_sends_no_new_commands_but_logs_out(tmp_path: Path, server: Server) -> None:
    server.block["a-slow"] = threading.Event()
    daemon = Daemon(
        str(write_config(tmp_path, ["a-slow", "z-other"], concurrency=1)), factory=server.factory
    )
    server.entered["a-slow"] = threading.Event()
    events = started(daemon, once=True)
    assert server.entered["a-slow"].wait(WAIT)  # one worker: "z-other" waits in the queue
    assert daemon.healthy()
    stopped: queue.Queue[bool] = queue.Queue()
    stopper = threading.Thread(target=lambda: stopped.put(daemon.stop(grace=WAIT)))
    stopper.start()
    assert daemon.sessions.stopping.wait(WAIT)
    assert not daemon.healthy()
    server.block["a-slow"].set()
    assert stopped.get(timeout=WAIT) is True
    stopper.join()
    assert server.commands["a-slow"] == ["quota", "close"]  # no FOLDERS after the stop, but LOGOUT
    done = wait_for(events, EVENT_JOB_EXECUTED, {"a-slow", "z-other"})
    assert done["a-slow"].retval.report.reason == "shutdown"
    assert done["z-other"].retval is None
    assert server.logins == ["a-slow"]  # "z-other" never logged in
    state = State(tmp_path / "state")
    assert state.last_report("a-slow") is None  # an interrupted check is not a failure
    state.close()


# ---------------------------------------------------------------------- systemd notify
@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(WAIT)
    yield sock, path
    sock.close()


def test_notify_messages(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("3 accounts\nsecond line")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 accounts second line"
    notifier.reloading()
    msg = sock.recv(4096).decode().split("\n")
    assert (
        msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=") and msg[1][15:].isdigit()
    )
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_notify_abstract_socket() -> None:
    name = f"quotawatch-test-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT)
        assert notify_address({"NOTIFY_SOCKET": "@" + name}) == "\0" + name
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_notify_without_systemd_does_nothing() -> None:
    assert not Notifier({}).ready()
    assert notify_address({"NOTIFY_SOCKET": "relative"}) is None


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "2"}, pid=2) == 1.0
    assert watchdog_interval({}) is None


def test_watchdog_pings_only_while_alive(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    alive = threading.Event()
    watchdog = Watchdog(Notifier({"NOTIFY_SOCKET": path}), 0.05, alive.is_set)
    watchdog.start()
    try:
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        alive.set()
        sock.settimeout(WAIT)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        watchdog.stop()


def test_event_types_used_here_exist() -> None:
    assert issubclass(JobExecutionEvent, SchedulerEvent)


def test_a_slow_start_does_not_push_the_first_checks_an_interval_later(
    tmp_path: Path, server: Server
) -> None:
    """Adding 10,000 jobs takes seconds: the first run each was given (``now`` + 1 s) may be past
    when the scheduler starts. It must still come then, not an interval later."""
    long_ago = datetime.now(UTC) - timedelta(seconds=30)  # the start took 30 s
    daemon = Daemon(str(write_config(tmp_path, ["alice", "bob"])), factory=server.factory,
                    clock=lambda: long_ago)  # fmt: skip
    events = started(daemon)
    done = wait_for(events, EVENT_JOB_EXECUTED, {"alice", "bob"})
    assert sorted(done) == ["alice", "bob"] and sorted(server.logins) == ["alice", "bob"]
    assert daemon.stop(grace=5)
