"""One mailbox, one worker: while another process holds a mailbox's lock, the CLI and the daemon
skip that mailbox (CLI: reason ``locked``, exit 1; daemon: counted as skipped) and touch nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from quotawatch.config import load_config
from quotawatch.config.sources import all_accounts
from quotawatch.retention.audit import AuditLog
from quotawatch.service.daemon import Daemon
from quotawatch.service.lock import lock_path
from sandbox.dovecot import SandboxUser
from sandbox.faultproxy import FaultProxy
from tests.integration.test_retention import deliver, uids_in
from tests.support import counter_value, imap_account, secret_file, write_config

REPO = Path(__file__).resolve().parents[2]
RULES = {"trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received",
                       "max_delete_fraction": "100%"}}  # fmt: skip
HOLDER = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def quotawatch_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "quotawatch", *args]


def quotawatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotawatch", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Another process holds the lock file with flock until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def setup(
    tmp_path: Path, user: SandboxUser, wait: str = "1s", more: list[dict[str, Any]] | None = None
) -> tuple[Path, Path]:
    old = datetime.now(UTC) - timedelta(days=60)
    message = b"From: a@example.org\r\nSubject: old\r\n\r\nbody\r\n"
    user.dovecot.deliver_bulk(user.name, "Trash", [(message, old, "S")] * 3)
    acct = imap_account(user.dovecot, "mine", user.name, user.password, tmp_path,
                        rules=["trash-30d"])  # fmt: skip
    path = write_config(tmp_path, [acct, *(more or [])], rules=RULES, schedule={"lock_wait": wait})
    config = load_config(path)
    return path, lock_path(config.state_dir, all_accounts(config, str(path))[0])


def done_uids(tmp_path: Path) -> list[int]:
    entries = AuditLog(tmp_path / "state" / "audit.jsonl").entries()
    return sorted(e["uid"] for e in entries if e.get("status") != "intent")


def trash_count(user: SandboxUser) -> int:
    return len(list((user.dovecot.folder_path(user.name, "Trash") / "cur").iterdir()))


def test_cli_cleanup_skips_a_mailbox_another_process_works_on(
    tmp_path: Path, user: SandboxUser
) -> None:
    config, lock = setup(tmp_path, user)
    with held(lock):
        busy = quotawatch("cleanup", "--apply", "--json", "-c", str(config))
    assert busy.returncode == 1, busy.stderr
    (entry,) = json.loads(busy.stdout)["accounts"]
    assert entry["name"] == "mine" and "locked" in entry["error"] and entry["cleanup"] is None
    assert "reason=locked" in busy.stderr
    assert trash_count(user) == 3
    assert list(AuditLog(tmp_path / "state" / "audit.jsonl").entries()) == []

    free = quotawatch("cleanup", "--apply", "--json", "-c", str(config))
    assert free.returncode == 0, free.stderr
    assert trash_count(user) == 0
    assert done_uids(tmp_path) == [1, 2, 3]  # each message audited once


def test_two_entries_for_one_mailbox_share_the_lock(tmp_path: Path, user: SandboxUser) -> None:
    """Another name, another password file: the same server and login is the same mailbox."""
    twin = imap_account(user.dovecot, "twin", user.name, user.password, tmp_path / "twin",
                        rules=["trash-30d"])  # fmt: skip
    config, lock = setup(tmp_path, user, wait="30s", more=[twin])
    data = yaml.safe_load(config.read_text())
    data["schedule"]["lock_wait"] = "0s"
    impatient = tmp_path / "impatient.yaml"
    impatient.write_text(yaml.safe_dump(data))
    with held(lock):
        busy = quotawatch("cleanup", "--apply", "--json", "-c", str(impatient))
    assert busy.returncode == 1
    entries = json.loads(busy.stdout)["accounts"]
    assert [e["name"] for e in entries] == ["mine", "twin"]
    assert all("locked" in e["error"] for e in entries) and trash_count(user) == 3

    both = quotawatch("cleanup", "--apply", "--json", "-c", str(config))  # one after the other
    assert both.returncode == 0, both.stderr
    assert trash_count(user) == 0
    assert done_uids(tmp_path) == [1, 2, 3]  # each message audited once


def test_the_daemon_skips_a_locked_mailbox_and_counts_it(tmp_path: Path, user: SandboxUser) -> None:
    config, lock = setup(tmp_path, user)
    daemon = Daemon(str(config))
    try:
        with held(lock):
            result = daemon.run_job("mine")
        assert result is not None and result.report.reason == "locked"
        skipped = counter_value(daemon.counters, "quotawatch_checks_total", {"result": "skipped"})
        assert skipped == 1
        assert counter_value(daemon.counters, "quotawatch_checks_total", {"result": "failed"}) in (
            None,
            0,
        )
        assert daemon.state.last_report("mine") is None  # nothing stored: the other worker does it
        assert trash_count(user) == 3
        result = daemon.run_job("mine")
        assert result is not None and result.ok and trash_count(user) == 0
    finally:
        daemon.state.close()


def test_two_quotawatch_cleanups_on_one_mailbox(tmp_path: Path, user: SandboxUser) -> None:
    """Two real `quotawatch cleanup --apply` processes with one config: A is held inside its
    ``UID STORE`` by the fault proxy (it holds the mailbox lock), B skips with reason ``locked``
    and exit 1 and touches nothing; A then finishes: each planned message audited done once,
    nothing outside the plan gone."""
    old = deliver(user, "Trash", [(60, "S")] * 4)
    young = deliver(user, "Trash", [(3, "S")] * 2)
    with FaultProxy(user.dovecot.host, user.dovecot.imap_port, hold=b"UID STORE",
                    connection=None) as proxy:  # fmt: skip
        acct = {"name": "mine", "host": user.dovecot.host, "port": proxy.port, "tls": "none",
                "allow_insecure_plaintext": True, "username": user.name, "rules": ["trash-30d"],
                "password_file": str(secret_file(tmp_path / "secrets", "mine", user.password)),
                "connect_timeout": 5, "timeout": 60}  # fmt: skip
        config = write_config(tmp_path, [acct], rules=RULES, schedule={"lock_wait": "1s"})
        a = subprocess.Popen(
            quotawatch_args("cleanup", "--apply", "--json", "-c", str(config)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        try:
            assert proxy.held.wait(60), "A never sent its UID STORE"
            b = quotawatch("cleanup", "--apply", "--json", "-c", str(config))
        finally:
            proxy.release()
            a_out, a_err = a.communicate(timeout=120)
    assert b.returncode == 1, (b.stdout, b.stderr)
    (entry,) = json.loads(b.stdout)["accounts"]
    assert entry["name"] == "mine" and entry["cleanup"] is None
    assert entry["error"] == (
        "mine: locked: another quotawatch worker is busy with this mailbox (same server and "
        "login); skipped after waiting 1s"
    )
    assert "reason=locked" in b.stderr
    assert a.returncode == 0, (a_out, a_err)
    (entry,) = json.loads(a_out)["accounts"]
    assert entry["cleanup"]["ok"] and entry["cleanup"]["messages"] == len(old)
    assert uids_in(user, "Trash") == young, "the plan's messages gone, nothing else"
    entries = AuditLog(tmp_path / "state" / "audit.jsonl").entries()
    assert [e["status"] for e in entries].count("intent") == len(old), "B journaled nothing"
    assert done_uids(tmp_path) == old, "each message audited once"
