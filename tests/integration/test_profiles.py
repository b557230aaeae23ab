"""Provider profiles against a Dovecot that looks like Exchange Online: well-known folder names, a configured quota."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.config import load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.mail.imap.session import GMAIL_QUOTA_NOTE
from quotawatch.model import AccountReport
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import check_accounts, run_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from tests.support import imap_account, write_config

OLD = datetime.now(UTC) - timedelta(days=90)
RULES = {
    "trash": {"folders": ["\\Trash"], "older_than": "30d", "age": "received", "max_delete_fraction": "100%"},
    "junk": {"folders": ["\\Junk"], "older_than": "30d", "age": "received", "max_delete_fraction": "100%"},
}  # fmt: skip


def mailbox(dovecot: Dovecot) -> tuple[str, str]:
    name, password = f"ex{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    for folder, count in (
        ("INBOX", 3),
        ("Gelöschte Elemente", 4),
        ("Junk-E-Mail", 2),
        ("Sent Items", 1),
    ):
        msgs = [
            (f"Subject: {folder} {i}\r\n\r\n{'x' * 2000}\r\n".encode(), OLD, "S")
            for i in range(count)
        ]
        dovecot.deliver_bulk(name, folder, msgs)
    return name, password


def accounts(tmp_path: Path, dovecot: Dovecot, name: str, password: str, **extra: Any) -> list[Any]:
    acct = imap_account(dovecot, name, name, password, tmp_path, rules=["trash", "junk"], **extra)
    path = write_config(tmp_path, [acct], rules=RULES)
    return [load_config(path), all_accounts(load_config(path), str(path))]


def test_exchange_profile_finds_special_folders_by_name_and_uses_the_configured_quota(
    tmp_path: Path, dovecot_exchange: Dovecot
) -> None:
    name, password = mailbox(dovecot_exchange)
    config, (account,) = accounts(
        tmp_path, dovecot_exchange, name, password, provider="microsoft365", quota="5MB"
    )
    (report,) = check_accounts([account], SecretCache(), concurrency=1)
    assert isinstance(report, AccountReport) and report.ok, report.error
    assert report.snapshot is not None
    special = {f.name: f.special_use for f in report.snapshot.folders}
    assert special["Gelöschte Elemente"] == "\\Trash"
    assert special["Junk-E-Mail"] == "\\Junk"
    assert special["Sent Items"] == "\\Sent"
    (quota,) = report.snapshot.quota
    assert (quota.root, quota.resource, quota.limit) == ("configured", "STORAGE", 5_000_000)
    assert quota.usage == sum(f.size_bytes for f in report.snapshot.folders) > 0
    assert any("no IMAP QUOTA: limit from the config" in n for n in report.snapshot.notes)

    state = State(config.state_dir)
    try:
        result = run_account(account, config, state, SecretCache(), cleanup=True,
                             now=datetime.now(UTC), audit=AuditLog(config.state_dir / "audit.jsonl"))  # fmt: skip
    finally:
        state.close()
    assert result.ok, result.failures
    assert result.cleanup is not None and result.cleanup.messages == 6
    (after,) = check_accounts([account], SecretCache())
    assert after.snapshot is not None
    left = {f.name: f.messages for f in after.snapshot.folders}
    assert left["Gelöschte Elemente"] == 0 and left["Junk-E-Mail"] == 0
    assert left["INBOX"] == 3 and left["Sent Items"] == 1


def test_without_the_profile_exchange_names_are_plain_folders(
    tmp_path: Path, dovecot_exchange: Dovecot
) -> None:
    name, password = mailbox(dovecot_exchange)
    _config, (account,) = accounts(tmp_path, dovecot_exchange, name, password)
    (report,) = check_accounts([account], SecretCache(), concurrency=1)
    assert report.ok and report.snapshot is not None
    assert {f.name: f.special_use for f in report.snapshot.folders}["Gelöschte Elemente"] is None
    assert report.snapshot.quota == ()


def test_gmail_profile_says_what_the_quota_covers(tmp_path: Path, dovecot: Dovecot) -> None:
    name, password = f"gm{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    acct = imap_account(dovecot, name, name, password, tmp_path, provider="gmail")
    path = write_config(tmp_path, [acct])
    (account,) = all_accounts(load_config(path), str(path))
    (report,) = check_accounts([account], SecretCache(), concurrency=1)
    assert report.ok and report.snapshot is not None
    assert GMAIL_QUOTA_NOTE in report.snapshot.notes
    assert report.snapshot.quota  # GETQUOTAROOT is read as usual


def test_gmail_delete_moves_to_trash_and_removes_exactly_those_there(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    name, password = f"gd{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    old = [(f"Subject: news {i}\r\n\r\n{'n' * 3000}\r\n".encode(), OLD, "S") for i in range(5)]
    new = [(b"Subject: fresh\r\n\r\nf\r\n", datetime.now(UTC), "S")]
    dovecot.deliver_bulk(name, "Newsletters", old + new)
    kept = [(f"Subject: kept in trash {i}\r\n\r\nk\r\n".encode(), OLD, "S") for i in range(2)]
    dovecot.deliver_bulk(name, "Trash", kept)
    rules = {"news": {"folders": ["Newsletters"], "older_than": "30d", "age": "received",
                      "max_delete_fraction": "100%"}}  # fmt: skip
    acct = imap_account(dovecot, name, name, password, tmp_path, provider="gmail", rules=["news"])
    path = write_config(tmp_path, [acct], rules=rules)
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    state = State(config.state_dir)
    try:
        result = run_account(account, config, state, SecretCache(), cleanup=True,
                             now=datetime.now(UTC), audit=AuditLog(config.state_dir / "audit.jsonl"))  # fmt: skip
    finally:
        state.close()
    assert result.ok, result.failures
    assert result.cleanup is not None and result.cleanup.messages == 5
    (after,) = check_accounts([account], SecretCache())
    assert after.snapshot is not None
    left = {f.name: f.messages for f in after.snapshot.folders}
    assert left["Newsletters"] == 1  # the fresh one
    assert left["Trash"] == 2  # what was there before; the five moved ones were removed there
    # they went through Trash: five UIDs were given out there (a plain delete gives none)
    status = dovecot.doveadm("-f", "flow", "mailbox", "status", "-u", name, "uidnext", "Trash")
    assert status.split()[-1] == "uidnext=8"
    subjects = dovecot.doveadm("-f", "flow", "fetch", "-u", name, "hdr.subject", "mailbox", "Trash")
    assert subjects.count("kept in trash") == 2 and "news" not in subjects
