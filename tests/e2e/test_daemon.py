"""The daemon as systemd runs it: a subprocess against the sandbox Dovecot, notify socket, /metrics, signals."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sandbox.dovecot import DOVECOT_BIN, Dovecot, make_base_dir
from tests.support import imap_account, write_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0
PASSWORDS = {"alice": "Alice-pw-7f3a91", "carol": "Carol-pw-0b62c4"}
WRONG = "Wrong-pw-5d8e21"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not Path(DOVECOT_BIN).exists():
        pytest.fail(f"Dovecot is not installed ({DOVECOT_BIN})")
    base = make_base_dir("qw-e2e-daemon-")
    server = Dovecot(base, name="e2edaemon")
    try:
        server.start()
        for name, password in PASSWORDS.items():
            server.add_user(name, password)
        server.add_user("bob", "Bob-right-pw-77")
        when = datetime.now(UTC) - timedelta(days=3)
        server.deliver_bulk("alice", "INBOX", [(message(i, 20_000), when, "S") for i in range(5)])
        server.deliver_bulk("alice", "Trash", [(message(i, 50_000), when, "S") for i in range(3)])
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def message(i: int, size: int) -> bytes:
    head = (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n"
    )
    return head.encode() + b"x" * (size - len(head) - 2) + b"\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DaemonExited(AssertionError):
    """The daemon process ended while a notification was awaited."""


class Daemon:
    """``quotawatch run`` as a subprocess with a real NOTIFY_SOCKET and its stderr in a queue."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.sockdir = Path(tempfile.mkdtemp(prefix="qw-notify-"))
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.sockdir / "notify"))
        self.notify.settimeout(WAIT)
        env = dict(os.environ, NOTIFY_SOCKET=str(self.sockdir / "notify"), WATCHDOG_USEC="2000000")
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quotawatch", "run", "--config", str(config)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.messages: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def expect_notify(self, field: str) -> str:
        """The next notify datagram containing ``field`` (e.g. READY=1)."""
        self.notify.settimeout(1.0)
        for _ in range(int(WAIT)):
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise DaemonExited("".join(self.log)) from None
                continue
            self.messages.append(msg)
            if field in msg.split("\n"):
                return msg
        raise AssertionError(f"no {field} within {WAIT}s; log:\n{''.join(self.log)}")

    def expect_log(self, *needles: str) -> None:
        """Wait until a log line contains each of ``needles``."""
        missing = set(needles)
        missing -= {n for n in missing if any(n in line for line in self.log)}
        while missing:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(
                    f"no log line with {missing}; log:\n{''.join(self.log)}"
                ) from None
            missing -= {n for n in missing if n in line}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }  # fmt: skip


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def promtool_ok(text: str) -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connections are refused, and nobody else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def start(make_config: Callable[[int], Path], workdir: Path) -> tuple[Daemon, int]:
    """Start the daemon on a free metrics port and wait for READY=1; retry if the port was taken."""
    for _ in range(3):
        port = free_port()
        daemon = Daemon(make_config(port), workdir)
        try:
            daemon.expect_notify("READY=1")
            return daemon, port
        except DaemonExited as exc:
            daemon.close()
            if "cannot serve metrics" not in str(exc):
                raise
    raise AssertionError("no free port for the metrics endpoint")


def accounts(
    dovecot: Dovecot, workdir: Path, names: list[str], dead_port: int = 0
) -> list[dict[str, Any]]:
    out = []
    for name in names:
        if name == "bob":
            out.append(imap_account(dovecot, "bob", "bob", WRONG, workdir))
        elif name == "dead":
            out.append(
                imap_account(
                    dovecot, "dead", "dead", "x", workdir, port=dead_port, connect_timeout=3
                )
            )
        else:
            out.append(imap_account(dovecot, name, name, PASSWORDS[name], workdir))
    return out


def config(dovecot: Dovecot, workdir: Path, names: list[str], port: int, dead_port: int) -> Path:
    return write_config(
        workdir, accounts(dovecot, workdir, names, dead_port),
        schedule={"interval": "1h", "jitter": "0s", "concurrency": 4},
        metrics={"listen": f"127.0.0.1:{port}", "top_folders": 3},
    )  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_daemon_lifecycle(dovecot: Dovecot, workdir: Path, dead_port: int) -> None:
    daemon, port = start(
        lambda port: config(dovecot, workdir, ["alice", "bob", "dead"], port, dead_port), workdir
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert "STATUS=3 accounts" in daemon.messages[-1]
        assert fetch(base + "/healthz") == (200, "ok\n")  # bound before READY=1
        daemon.expect_notify("WATCHDOG=1")
        daemon.expect_notify("WATCHDOG=1")

        daemon.expect_log("account=alice checked", "account=bob auth failure 1",
                          "check failed account=dead reason=connect")  # fmt: skip
        status, text = fetch(base + "/metrics")
        assert status == 200
        promtool_ok(text)
        used_kib, limit_kib = dovecot.quota_get("alice")["STORAGE"]
        assert value(text, "quotawatch_account_up", account="alice") == 1
        assert value(text, "quotawatch_account_up", account="bob") == 0
        assert value(text, "quotawatch_account_up", account="dead") == 0
        assert value(text, "quotawatch_account_errors_total", account="bob", reason="auth") == 1
        assert value(text, "quotawatch_account_errors_total", account="dead", reason="connect") == 1
        root = {"account": "alice", "root": "User quota"}
        assert value(text, "quotawatch_quota_usage_bytes", **root) == used_kib * 1024 > 0
        assert (
            value(text, "quotawatch_quota_limit_bytes", **root)
            == (limit_kib or 0) * 1024
            == 10 * 1024 * 1024
        )
        folders = {
            labels for (name, labels) in samples(text) if name == "quotawatch_folder_size_bytes"
        }
        assert len(folders) == 3  # top_folders
        assert value(text, "quotawatch_folder_messages", account="alice", folder="Trash") == 3
        assert value(text, "quotawatch_folder_messages", account="alice", folder="INBOX") == 5
        assert value(text, "quotawatch_last_success_timestamp_seconds", account="bob") == 0
        assert (value(text, "quotawatch_last_success_timestamp_seconds", account="alice") or 0) > 0

        # SIGHUP: bob removed, carol added
        path = config(dovecot, workdir, ["alice", "carol", "dead"], port, dead_port)
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = daemon.expect_notify("RELOADING=1")
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloading.split("\n"))
        daemon.expect_notify("READY=1")
        daemon.expect_log(
            "reloaded: 3 accounts (1 added, 1 removed, 0 changed)", "account=carol checked"
        )
        _, text = fetch(base + "/metrics")
        promtool_ok(text)
        assert 'account="bob"' not in text
        assert value(text, "quotawatch_account_up", account="carol") == 1
        assert value(text, "quotawatch_account_up", account="alice") == 1

        # SIGHUP with a broken config: rejected with the usual error list, the old one runs on
        good = path.read_text()
        data = yaml.safe_load(good)
        data["accounts"][0]["tls"] = "sometimes"
        data["schedule"]["concurrency"] = 0
        path.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.expect_notify("RELOADING=1")
        assert "reload rejected" in daemon.expect_notify("READY=1")
        daemon.expect_log(f"reload rejected: {path}: accounts[0].tls:",
                          f"reload rejected: {path}: schedule.concurrency:")  # fmt: skip
        assert fetch(base + "/healthz")[0] == 200
        _, text = fetch(base + "/metrics")
        assert value(text, "quotawatch_accounts_configured") == 3
        assert value(text, "quotawatch_account_up", account="carol") == 1

        daemon.proc.send_signal(signal.SIGTERM)
        daemon.expect_notify("STOPPING=1")
        assert daemon.proc.wait(timeout=15) == 0
        log = "".join(daemon.log)
        for secret in (*PASSWORDS.values(), WRONG):
            assert secret not in log and secret not in text
        assert "Traceback" not in log
    finally:
        daemon.close()


def test_run_once_exit_codes(dovecot: Dovecot, workdir: Path, dead_port: int) -> None:
    def run(names: list[str]) -> subprocess.CompletedProcess[str]:
        path = config(dovecot, workdir, names, free_port(), dead_port)  # --once serves no metrics
        return subprocess.run([sys.executable, "-m", "quotawatch", "run", "--once", "--config", str(path)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = run(["alice", "carol"])
    assert ok.returncode == 0, ok.stderr
    assert "run --once: 2 accounts, 2 ok, 0 failed" in ok.stderr
    failed = run(["alice", "dead"])
    assert failed.returncode == 1, failed.stderr
    assert "run --once: 2 accounts, 1 ok, 1 failed" in failed.stderr
    assert "check failed account=dead reason=connect" in failed.stderr


def old_trash_config(
    dovecot: Dovecot, workdir: Path, name: str, password: str
) -> Callable[[int], Path]:
    """A config maker for one account whose rule deletes Trash mail older than 2 days, with
    cleanup on and /metrics on the given port."""

    def make_config(port: int) -> Path:
        account = imap_account(dovecot, name, name, password, workdir,
                               rules=["old-trash"], max_delete_fraction="100%")  # fmt: skip
        return write_config(
            workdir, [account],
            rules={"old-trash": {"folders": ["\\Trash"], "older_than": "2d", "age": "received"}},
            schedule={"interval": "1h", "jitter": "0s", "cleanup": True},
            metrics={"listen": f"127.0.0.1:{port}"},
        )  # fmt: skip

    return make_config


def test_daemon_applies_rules_and_counts_the_cleanup(dovecot: Dovecot, workdir: Path) -> None:
    dovecot.add_user("dave", "Dave-pw-31c9d0")
    old = datetime.now(UTC) - timedelta(days=5)
    dovecot.deliver_bulk("dave", "Trash", [(message(i, 30_000), old, "S") for i in range(4)])
    dovecot.deliver_bulk("dave", "Trash", [(message(9, 30_000), datetime.now(UTC), "S")])

    daemon, port = start(old_trash_config(dovecot, workdir, "dave", "Dave-pw-31c9d0"), workdir)
    try:
        daemon.expect_log("account=dave checked")
        _, text = fetch(f"http://127.0.0.1:{port}/metrics")
        promtool_ok(text)
        labels = {"account": "dave", "rule": "old-trash", "action": "delete"}
        assert value(text, "quotawatch_cleanup_deleted_messages_total", **labels) == 4
        assert (value(text, "quotawatch_cleanup_freed_bytes_total", **labels) or 0) >= 4 * 30_000
        assert value(text, "quotawatch_plan_pending_bytes", account="dave") == 0
        assert value(text, "quotawatch_cleanup_enabled") == 1
        status = dovecot.doveadm(
            "-f", "tab", "mailbox", "status", "-u", "dave", "messages", "Trash"
        )
        assert status.split()[-1] == "1"  # the young message stays
        audit = (workdir / "state" / "audit.jsonl").read_text().splitlines()
        assert [json.loads(line)["status"] for line in audit] == ["intent"] * 4 + ["done"] * 4
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0
    finally:
        daemon.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_daemon_with_a_full_disk_touches_nothing_and_counts_reason_state(
    dovecot: Dovecot, workdir: Path
) -> None:
    dovecot.add_user("erin", "Erin-pw-77ab12")
    old = datetime.now(UTC) - timedelta(days=5)
    dovecot.deliver_bulk("erin", "Trash", [(message(i, 3_000), old, "S") for i in range(3)])
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    (workdir / "state" / "audit.jsonl").symlink_to("/dev/full")  # ENOSPC on every write

    daemon, port = start(old_trash_config(dovecot, workdir, "erin", "Erin-pw-77ab12"), workdir)
    try:
        daemon.expect_log("account=erin cleanup failed reason=state")
        daemon.expect_log("account=erin checked")
        _, text = fetch(f"http://127.0.0.1:{port}/metrics")
        promtool_ok(text)
        assert value(text, "quotawatch_errors_total", reason="state") == 1
        assert value(text, "quotawatch_account_errors_total", account="erin", reason="state") == 1
        labels = {"account": "erin", "rule": "old-trash", "action": "delete"}
        assert value(text, "quotawatch_cleanup_deleted_messages_total", **labels) == 0
        assert value(text, "quotawatch_cleanup_unconfirmed_total", account="erin") == 0
        status = dovecot.doveadm(
            "-f", "tab", "mailbox", "status", "-u", "erin", "messages", "Trash"
        )
        assert status.split()[-1] == "3", "nothing is touched when the intent cannot be written"
        assert "Traceback" not in "".join(daemon.log)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0
    finally:
        daemon.close()
