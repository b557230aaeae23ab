"""The gmail profile against a Dovecot with Gmail's folder layout: ``[Gmail]/Trash``, ``[Gmail]/Spam``,
labels, and the virtual ``\\All`` view; exactly the planned messages go, nothing else moves."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.config import load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import check_accounts, cleanup_accounts
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from tests.support import imap_account, write_config

OLD, NOW = datetime.now(UTC) - timedelta(days=90), datetime.now(UTC)
TRASH, SPAM, ALL = "[Gmail]/Trash", "[Gmail]/Spam", "Virtual/All Mail"
#: folder -> (subject, old?) of what each holds before the cleanup
MAIL = {
    "INBOX": [("inbox 1", True), ("inbox 2", True), ("inbox new", False)],
    "Newsletters": [*((f"news {i}", True) for i in range(5)), ("news fresh", False)],
    "Work/Projects": [("work 1", True), ("work 2", True)],
    "[Gmail]/Sent Mail": [("sent 1", True)],
    TRASH: [("trash old 1", True), ("trash old 2", True), ("trash fresh", False)],
    SPAM: [("spam 1", True), ("spam 2", True), ("spam 3", True)],
}
RULES = {
    # a label folder, and the All Mail view by name and by glob (never a target)
    "news": {"folders": ["Newsletters", ALL, "Virtual/*"], "older_than": "30d", "age": "received",
             "max_delete_fraction": "100%"},
    "spam": {"folders": ["\\Junk"], "older_than": "30d", "age": "received", "max_delete_fraction": "100%"},
    "trash": {"folders": ["\\Trash"], "older_than": "30d", "age": "received", "max_delete_fraction": "100%"},
}  # fmt: skip


def subjects(dovecot: Dovecot, user: str, folder: str) -> list[str]:
    out = dovecot.doveadm("-f", "flow", "fetch", "-u", user, "hdr.subject", "mailbox", folder)
    return sorted(line.removeprefix("hdr.subject=") for line in out.splitlines())


def fingerprint(dovecot: Dovecot, user: str, folder: str) -> str:
    """UIDs, GUIDs and flags of every message: what "untouched" means."""
    return dovecot.doveadm("-f", "flow", "fetch", "-u", user, "uid guid flags", "mailbox", folder)


def uidnext(dovecot: Dovecot, user: str, folder: str) -> int:
    out = dovecot.doveadm("-f", "flow", "mailbox", "status", "-u", user, "uidnext", folder)
    return int(out.split("uidnext=")[1])


def gmail_account(tmp_path: Path, dovecot: Dovecot, rules: dict[str, Any]) -> tuple[Any, Any, str]:
    name, password = f"gl{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    for folder, mail in MAIL.items():
        dovecot.deliver_bulk(name, folder, [
            (f"Subject: {s}\r\nMessage-ID: <{s.replace(' ', '.')}@{name}>\r\n\r\n{'x' * 3000}\r\n"
             .encode(), OLD if old else NOW, "S")
            for s, old in mail
        ])  # fmt: skip
    # provider: gmail (host imap.gmail.com), host/port/TLS pointed at the loopback Dovecot
    acct = imap_account(dovecot, name, name, password, tmp_path, provider="gmail",
                        rules=list(rules))  # fmt: skip
    path = write_config(tmp_path, [acct], rules=rules)
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    return config, account, name


def cleanup(config: Any, account: Any, apply: bool) -> tuple[Any, Any]:
    state = State(config.state_dir)
    try:
        ((plan, result),) = cleanup_accounts(
            [account], config, state, AuditLog(config.state_dir / "audit.jsonl"), SecretCache(),
            apply=apply, now=datetime.now(UTC),
        )  # fmt: skip
    finally:
        state.close()
    return plan, result


def test_the_gmail_layout_is_what_the_profile_sees(tmp_path: Path, dovecot_gmail: Dovecot) -> None:
    _config, account, _user = gmail_account(tmp_path, dovecot_gmail, {})
    (report,) = check_accounts([account], SecretCache(), concurrency=1)
    assert report.ok and report.snapshot is not None, report.error
    special = {f.name: f.special_use for f in report.snapshot.folders}
    assert {n: special.get(n) for n in (TRASH, SPAM, ALL)} == {
        TRASH: "\\Trash", SPAM: "\\Junk", ALL: "\\All"
    }  # fmt: skip
    assert "[Gmail]" not in special  # \Noselect, as on Gmail
    assert not {"Trash", "Junk"} & set(special) and special["Newsletters"] is None


def test_gmail_delete_path_on_a_gmail_layout(tmp_path: Path, dovecot_gmail: Dovecot) -> None:
    """Label folder: UID MOVE to [Gmail]/Trash, then removal of exactly those there; Spam and
    Trash: removal in place; All Mail (``\\All``) never a target; no other folder touched."""
    config, account, user = gmail_account(tmp_path, dovecot_gmail, RULES)
    untouched = ["INBOX", "Work/Projects", "[Gmail]/Sent Mail", "[Gmail]/Drafts"]
    before = {f: fingerprint(dovecot_gmail, user, f) for f in untouched}
    assert len(subjects(dovecot_gmail, user, ALL)) == 12  # the view: all but Trash and Spam
    trash_next, spam_next = uidnext(dovecot_gmail, user, TRASH), uidnext(dovecot_gmail, user, SPAM)

    plan, result = cleanup(config, account, apply=True)
    assert plan.ok, plan.error
    assert {(a.rule, a.folder, len(a.uids)) for a in plan.actions} == {
        ("news", "Newsletters", 5), ("spam", SPAM, 3), ("trash", TRASH, 2)
    }  # fmt: skip
    assert any(f"'{ALL}' is a virtual folder" in n for n in plan.notes)
    assert result is not None and result.ok, result.errors
    assert result.messages == 10

    assert subjects(dovecot_gmail, user, "Newsletters") == ["news fresh"]
    assert subjects(dovecot_gmail, user, TRASH) == ["trash fresh"]
    assert subjects(dovecot_gmail, user, SPAM) == []
    # the five went through Trash (five UIDs given out there), none through Spam
    assert uidnext(dovecot_gmail, user, TRASH) == trash_next + 5
    assert uidnext(dovecot_gmail, user, SPAM) == spam_next
    assert {f: fingerprint(dovecot_gmail, user, f) for f in untouched} == before
    assert subjects(dovecot_gmail, user, ALL) == sorted(
        ["inbox 1", "inbox 2", "inbox new", "news fresh", "work 1", "work 2", "sent 1"]
    )


def test_a_gmail_archive_plan_notes_the_download_limit(
    tmp_path: Path, dovecot_gmail: Dovecot
) -> None:
    rules = {"work": {"folders": ["Work/Projects"], "older_than": "30d", "age": "received",
                      "action": "archive", "archive_dir": str(tmp_path / "archive" / "{account}"),
                      "max_delete_fraction": "100%"}}  # fmt: skip
    config, account, _user = gmail_account(tmp_path, dovecot_gmail, rules)
    plan, result = cleanup(config, account, apply=False)
    assert plan.ok and result is None
    ((folder, n),) = [(a.folder, len(a.uids)) for a in plan.actions]
    assert (folder, n) == ("Work/Projects", 2)
    (note,) = [n for n in plan.notes if "Gmail" in n]
    assert note.startswith("Gmail limits IMAP downloads to 2,500 MB a day: this plan archives 0.0")
    assert plan.warnings == ()
