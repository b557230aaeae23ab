"""Fewer round trips and leaner parsing against the real Dovecot, with the same answers and checks."""

from __future__ import annotations

import base64
import imaplib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.config import load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.mail.imap.session import ImapSession
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import check_account, cleanup_account, run_account
from quotawatch.state import State
from tests.support import imap_account, write_config

NOW = datetime.now(UTC)
ODD_NAMES = ['a "quoted" name', "back\\slash", "007", "br]acket", "pct%", "{3}", "Entwürfe"]


class Sent(list[str]):
    """The verbs sent, one per command line; ``writes`` groups them by the write that sent them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    def clear(self) -> None:
        super().clear()
        self.writes.clear()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """The verb of each command line quotawatch's IMAP client sends (never the arguments, which
    hold credentials), also when several go out in one write; the server is real."""
    verbs = Sent()
    original = imaplib.IMAP4.send

    def send(self: imaplib.IMAP4, data: bytes) -> None:
        group = []
        for line in bytes(data).split(b"\r\n"):
            words = line.split()
            if len(words) > 1 and words[0].isalnum() and words[1].isalpha():
                group.append(words[1].decode())
        verbs.extend(group)
        if group:
            verbs.writes.append(group)
        original(self, data)

    monkeypatch.setattr(imaplib.IMAP4, "send", send)
    return verbs


def session_for(tmp_path: Path, user: Any, **overrides: Any) -> ImapSession:
    acct = imap_account(user.dovecot, user.name, user.name, user.password, tmp_path, **overrides)
    path = write_config(tmp_path, [acct])
    (account,) = all_accounts(load_config(path), str(path))
    return ImapSession.connect(account, SecretStr(user.password))


def test_capabilities_come_from_greeting_and_login_without_extra_commands(
    tmp_path: Path, user: Any, sent: list[str]
) -> None:
    with session_for(tmp_path, user) as session:
        caps = session.capabilities()
    assert {"QUOTA", "UIDPLUS", "LIST-STATUS"} <= caps  # the post-login list
    assert sent[:2] == ["AUTHENTICATE", "LOGOUT"] and "CAPABILITY" not in sent


def test_starttls_reads_capabilities_again_over_tls_once(
    tmp_path: Path, user: Any, sent: list[str]
) -> None:
    with session_for(tmp_path, user, port=user.dovecot.imap_port, tls="starttls") as session:
        caps = session.capabilities()
    assert sent[:3] == ["STARTTLS", "CAPABILITY", "AUTHENTICATE"]
    assert "STARTTLS" not in caps and "QUOTA" in caps


def test_authenticate_plain_takes_capabilities_from_the_tagged_answer(
    tmp_path: Path, user: Any, sent: list[str]
) -> None:
    dovecot = user.dovecot
    acct = imap_account(dovecot, "authz", dovecot.master_user, dovecot.master_password, tmp_path,
                        authorize_as=user.name)  # fmt: skip
    path = write_config(tmp_path, [acct])
    (account,) = all_accounts(load_config(path), str(path))
    report = check_account(account, SecretCache())
    assert report.ok, report.error
    assert "CAPABILITY" not in sent and "AUTHENTICATE" in sent


def test_odd_folder_names_are_reported_exactly_and_can_be_cleaned(
    tmp_path: Path, user: Any
) -> None:
    for i, name in enumerate(ODD_NAMES):
        items = [(b"Subject: %d\r\nMessage-ID: <%d.%d@x>\r\n\r\nbody\r\n" % (i, i, k),
                  NOW - timedelta(days=40 if k < 2 else 1), "S") for k in range(i + 3)]  # fmt: skip
        user.dovecot.deliver_bulk(user.name, name, items)
    rules = {"odd": {"folders": [ODD_NAMES[0], "0*"], "older_than": "30d", "age": "received"}}
    acct = imap_account(user.dovecot, user.name, user.name, user.password, tmp_path,
                        rules=["odd"], max_delete_fraction=1.0)  # fmt: skip
    path = write_config(tmp_path, [acct], rules=rules)
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    report = check_account(account, SecretCache())
    assert report.ok and report.snapshot is not None, report.error
    counts = {f.name: f.messages for f in report.snapshot.folders}
    assert {name: counts.get(name) for name in ODD_NAMES} == {
        name: i + 3 for i, name in enumerate(ODD_NAMES)
    }
    state = State(config.state_dir)
    try:
        plan, result = cleanup_account(
            account, config, state, AuditLog(config.state_dir / "audit.jsonl"), SecretCache(),
            apply=True, now=NOW,
        )  # fmt: skip
    finally:
        state.close()
    assert result is not None and result.ok, (plan, result)
    assert {(a.folder, len(a.uids)) for a in plan.actions} == {(ODD_NAMES[0], 2), ("007", 2)}
    audited = [
        e for e in AuditLog(config.state_dir / "audit.jsonl").entries() if e["status"] == "done"
    ]
    assert sorted(e["message_id"] for e in audited) == ["<0.0@x>", "<0.1@x>", "<2.0@x>", "<2.1@x>"]
    after = check_account(account, SecretCache())
    assert after.snapshot is not None
    left = {f.name: f.messages for f in after.snapshot.folders}
    assert left[ODD_NAMES[0]] == 1 and left["007"] == 3 and left["back\\slash"] == 4


def test_authenticate_plain_sends_the_response_with_the_command(
    tmp_path: Path, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SASL-IR: one round trip, no continuation; each line's shape is kept, never its words."""
    shapes: list[tuple[str, int]] = []
    original = imaplib.IMAP4.send

    def send(self: imaplib.IMAP4, data: bytes) -> None:
        words = bytes(data).split()
        verb = words[1].decode() if len(words) > 1 and words[0].isalnum() else "(data)"
        shapes.append((verb, len(words)))
        original(self, data)

    monkeypatch.setattr(imaplib.IMAP4, "send", send)
    with session_for(tmp_path, user):
        pass
    assert shapes[:2] == [("AUTHENTICATE", 4), ("LOGOUT", 2)]


def test_the_login_line_stays_out_of_imaplibs_memory_of_recent_commands(
    tmp_path: Path, user: Any
) -> None:
    """imaplib keeps the last commands it sent (a repr of each line) for debugging; the
    AUTHENTICATE PLAIN line holds the password (base64), so it goes through the lean reader."""
    with session_for(tmp_path, user) as session:
        assert "QUOTA" in session.capabilities()  # taken from the login answer, as before
        kept = repr(getattr(session.client._imap, "_cmd_log", {}))
    token = base64.b64encode(f"\0{user.name}\0{user.password}".encode()).decode()
    assert token not in kept and user.password not in kept


def test_the_daemon_spends_no_search_on_explaining_an_empty_rule(
    tmp_path: Path, user: Any, sent: list[str]
) -> None:
    """Why a rule selected nothing costs a search: `plan` (a person reading) pays it, the
    daemon's cycle does not."""
    from tests.integration.test_retention import deliver, setup

    deliver(user, "Trash", [(40, "F")] * 3)  # old but flagged: kept
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    state = State(config.state_dir)
    try:
        sent.clear()
        job = run_account(account, config, state, SecretCache(), cleanup=False, now=NOW)
        daemon_searches = sent.count("UID")
        assert job.plan is not None and not job.plan.actions
        assert not any("flagged" in n for n in job.plan.notes), job.plan.notes
        sent.clear()
        plan, _ = cleanup_account(
            account, config, state, AuditLog(config.state_dir / "audit.jsonl"), SecretCache(),
            apply=False, now=NOW,
        )  # fmt: skip
    finally:
        state.close()
    assert any("Trash: 3 candidates, all flagged" in n for n in plan.notes), plan.notes
    assert sent.count("UID") > daemon_searches


def test_a_check_reads_quota_and_folders_in_one_round_trip(
    tmp_path: Path, user: Any, sent: Sent
) -> None:
    """GETQUOTAROOT and LIST-STATUS go out in one write; the answers are the same as read one
    command at a time (folders first, which never pipelines)."""
    user.dovecot.deliver_bulk(user.name, "Trash", [(b"Subject: x\r\n\r\nbody\r\n", NOW, "S")] * 3)
    acct = imap_account(user.dovecot, user.name, user.name, user.password, tmp_path)
    (account,) = all_accounts(load_config(write_config(tmp_path, [acct])), str(tmp_path))
    report = check_account(account, SecretCache())
    assert report.ok and report.snapshot is not None, report.error
    assert sent.writes == [["AUTHENTICATE"], ["GETQUOTAROOT", "LIST"], ["LOGOUT"]]
    sent.clear()
    with ImapSession.connect(account, SecretStr(user.password)) as session:
        folders = session.folders()
        quota, _notes = session.quota()
    assert sent.writes == [["AUTHENTICATE"], ["LIST"], ["GETQUOTAROOT"], ["LOGOUT"]]
    assert report.snapshot.quota == quota
    assert set(report.snapshot.folders) == set(folders)
    assert next(f for f in folders if f.name == "Trash").messages == 3


def test_a_later_quota_read_is_alone_and_a_change_drops_the_kept_folders(
    tmp_path: Path, user: Any, sent: Sent
) -> None:
    """Only a session's first quota read brings the folders along; a writable SELECT between it
    and folders() makes folders() ask again (the kept answer may be stale by then)."""
    with session_for(tmp_path, user) as session:
        session.quota()
        session._select("INBOX", readonly=False)
        session.folders()
        session.quota()
    assert [w for w in sent.writes if w[0] not in ("ENABLE", "SELECT")] == [
        ["AUTHENTICATE"], ["GETQUOTAROOT", "LIST"], ["LIST"], ["GETQUOTAROOT"], ["LOGOUT"]
    ]  # fmt: skip


def test_a_cleanup_reads_the_audit_data_with_the_plan_and_learns_the_outcome_from_the_answers(
    tmp_path: Path, user: Any, lines: list[str]
) -> None:
    """With CONDSTORE and QRESYNC (Dovecot): no search before the mark (UNCHANGEDSINCE covers
    it; its FETCH answers say which exist), no metadata fetch per batch (read with the plan), no
    search after UID EXPUNGE (its VANISHED answer names what went), the check's quota as the
    "before"; the audit log is as complete as ever."""
    from tests.integration.test_retention import audited, deliver, setup

    trash = deliver(user, "Trash", [(40, "S")] * 4 + [(1, "S")])
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    state = State(config.state_dir)
    try:
        lines.clear()
        _plan, result = cleanup_account(
            account, config, state, AuditLog(config.state_dir / "audit.jsonl"), SecretCache(),
            apply=True, now=NOW,
        )  # fmt: skip
    finally:
        state.close()
    assert result is not None and result.ok and result.messages == 4, result
    assert result.freed_bytes is not None and result.freed_bytes > 0
    assert "ENABLE QRESYNC" in lines and lines.count('GETQUOTAROOT "INBOX"') == 2
    applied = lines[lines.index('SELECT "Trash"') :]
    assert [line.split()[:2] for line in applied] == [
        ["SELECT", '"Trash"'], ["UID", "STORE"], ["NOOP"], ["UID", "SEARCH"], ["UID", "EXPUNGE"],
        ["GETQUOTAROOT", '"INBOX"'], ["LOGOUT"],
    ]  # fmt: skip
    done = [e for e in audited(config) if e["status"] == "done"]
    assert sorted(e["uid"] for e in done) == trash[:4]
    assert all(e["message_id"] and e["size"] and e["internaldate"] for e in done), done
