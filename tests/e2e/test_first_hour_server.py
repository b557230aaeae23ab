"""The first hour against the sandbox Dovecot, as subprocesses: one mailbox by URL (password from a
file or typed at a real terminal), warn --preview below every threshold, plan saying why."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.dovecot import DOVECOT_BIN, Dovecot, make_base_dir
from tests.support import imap_account, secret_file, write_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Url-pw-4c1e77"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not Path(DOVECOT_BIN).exists():
        pytest.fail(f"Dovecot is not installed ({DOVECOT_BIN})")
    base = make_base_dir("qw-e2e-first-")
    server = Dovecot(base, name="e2efirst")
    try:
        server.start()
        server.add_user("me", PASSWORD)
        old = datetime.now(UTC) - timedelta(days=400)
        server.deliver_bulk("me", "INBOX", [(message(i, 3000), old, "") for i in range(40)])
        server.deliver_bulk("me", "Trash", [(message(i, 2000), old, "S") for i in range(12)])
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def message(i: int, size: int) -> bytes:
    head = f"From: a@example.org\r\nTo: me@example.org\r\nSubject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n"
    return head.encode() + b"x" * (size - len(head) - 2) + b"\r\n"


def quotawatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotawatch", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_check_url_prints_the_same_report_as_with_a_config(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    pw = secret_file(tmp_path, "me", PASSWORD)
    url = f"imaps://me@{dovecot.host}:{dovecot.imaps_port}"
    by_url = quotawatch("check", url, "--password-file", str(pw), "--ca-file", str(dovecot.ca_file))
    assert by_url.returncode == 0, by_url.stdout + by_url.stderr
    account = imap_account(dovecot, f"me@{dovecot.host}", "me", PASSWORD, tmp_path)
    by_config = quotawatch("check", "--config", str(write_config(tmp_path, [account])))
    assert by_config.returncode == 0, by_config.stderr
    assert by_url.stdout == by_config.stdout
    assert "INBOX" in by_url.stdout and "Trash" in by_url.stdout
    assert PASSWORD not in by_url.stdout + by_url.stderr

    starttls = f"imap://me@{dovecot.host}:{dovecot.imap_port}"
    pop3 = f"pop3s://me@{dovecot.host}:{dovecot.pop3s_port}"
    for other in (starttls, pop3):
        result = quotawatch(
            "check", other, "--password-file", str(pw), "--ca-file", str(dovecot.ca_file), "--json"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"ok": true' in result.stdout
    wrong_ca = quotawatch("check", url, "--password-file", str(pw))  # system store: not trusted
    assert wrong_ca.returncode == 1 and "TLS certificate not trusted" in wrong_ca.stdout


def test_check_url_asks_for_the_password_on_a_terminal(dovecot: Dovecot) -> None:
    url = f"imaps://me@{dovecot.host}:{dovecot.imaps_port}"
    argv = [sys.executable, "-m", "quotawatch", "check", url, "--ca-file", str(dovecot.ca_file)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a real terminal on stdin, stdout and /dev/tty
        os.chdir(REPO)
        os.execv(sys.executable, argv)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while b"Password for me at" not in output and time.monotonic() < deadline:
            output += os.read(fd, 1024)
        os.write(fd, PASSWORD.encode() + b"\n")
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "INBOX" in text and "Trash" in text
    assert PASSWORD not in text  # getpass does not echo


def test_warn_preview_below_every_threshold_shows_no_mail(dovecot: Dovecot, tmp_path: Path) -> None:
    account = imap_account(dovecot, "me", "me", PASSWORD, tmp_path, email="me@example.org")
    smtp = {"host": "127.0.0.1", "port": 9, "tls": "implicit", "from": "q <q@example.org>"}
    path = write_config(tmp_path, [account], smtp=smtp, warnings={"thresholds": ["80%"]})
    result = quotawatch("warn", "--preview", "--config", str(path))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert (
        line.startswith("me: no warning due (") and "%, below 80 %) (from the live check)" in line
    )
    assert "Subject:" not in result.stdout
    forced = quotawatch("warn", "--preview", "--force", "--config", str(path))
    assert forced.returncode == 0, forced.stderr
    assert "showing the warning anyway (--force)" in forced.stdout
    assert re.search(
        r"^Subject: Your mailbox me@example.org is \d+(\.\d)? % full$", forced.stdout, re.M
    )


def test_plan_says_why_a_rule_selects_nothing(dovecot: Dovecot, tmp_path: Path) -> None:
    rules = {
        "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "saved"},
        "old-inbox": {"folders": ["INBOX"], "older_than": "30d", "age": "received",
                      "allow_inbox": True},
    }  # fmt: skip
    account = imap_account(dovecot, "me", "me", PASSWORD, tmp_path, rules=list(rules))
    path = write_config(tmp_path, [account], rules=rules)
    result = quotawatch("plan", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "  nothing to do" in result.stdout
    # delivered today (SAVEDATE), though received 400 days ago
    assert "note: rule trash-30d: Trash: 12 messages, none in this folder for 30 days" in (
        result.stdout
    )
    assert "note: rule old-inbox: INBOX: 40 candidates, all unseen (keep_unseen)" in result.stdout
