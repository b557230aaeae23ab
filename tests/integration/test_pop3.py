"""POP3 accounts against the real sandbox Dovecot: sizes, login, guard, and DELE that only QUIT commits."""

from __future__ import annotations

import json
import logging
import poplib
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.cli import main
from quotawatch.config import Account, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.errors import (
    MailboxError,
    ProtocolError,
    SafetyStop,
    TemporaryServerError,
    TLSError,
)
from quotawatch.mail.pop3.session import Pop3Session
from quotawatch.mail.session import SearchQuery
from quotawatch.retention.client_guard import guard_candidates
from quotawatch.service.jobs import check_account
from quotawatch.state import State
from tests.support import imap_account, secret_file, write_config

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MiB = 1024 * 1024


def message(i: int, size: int = 600, date: str | None = "Mon, 1 Jan 2024 10:00:00 +0000") -> bytes:
    head = f"From: sender{i}@example.org\r\nTo: bob@example.org\r\nSubject: pop {i}\r\n"
    head += f"Message-ID: <pop{i}@example.org>\r\n"
    if date is not None:
        head += f"Date: {date}\r\n"
    body = b"".join(b"line %06d of the body\r\n" % n for n in range(size // 24 + 1))
    return head.encode() + b"\r\n" + body


def deliver(user: Any, messages: list[bytes]) -> None:
    user.dovecot.deliver_bulk(user.name, "INBOX", [(m, T0, "") for m in messages])


def pop_dict(user: Any, directory: Path, **overrides: Any) -> dict[str, Any]:
    """A config account for the sandbox's implicit-TLS POP3 port."""
    dovecot = user.dovecot
    account: dict[str, Any] = {
        "name": user.name,
        "protocol": "pop3",
        "host": dovecot.host,
        "port": dovecot.pop3s_port,
        "tls": "implicit",
        "ca_file": str(dovecot.ca_file),
        "username": user.name,
        "password_file": str(secret_file(directory / "secrets", user.name, user.password)),
        "quota": 10 * MiB,
        "connect_timeout": 5,
        "timeout": 30,
    }
    account.update(overrides)
    return account


def pop_account(user: Any, directory: Path, **overrides: Any) -> Account:
    return Account.model_validate(pop_dict(user, directory, **overrides))


def connect(user: Any, directory: Path, **overrides: Any) -> Pop3Session:
    return Pop3Session.connect(pop_account(user, directory, **overrides), SecretStr(user.password))


def server_view(user: Any, directory: Path) -> tuple[int, int, list[str]]:
    """(count, octets, UIDLs) as a fresh session sees the INBOX."""
    with connect(user, directory) as session:
        (inbox,) = session.folders()
        uidls = [str(u) for u in session.select_candidates("INBOX", SearchQuery()).all_uids]
    return inbox.messages, inbox.size_bytes, uidls


# ----------------------------------------------------------------------------- check


def test_check_shows_pop3_like_imap(
    tmp_path: Path, user: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    msgs = [message(i, 400 + 250 * i) for i in range(12)]
    deliver(user, msgs)
    dovecot = user.dovecot
    accounts = [
        pop_dict(user, tmp_path, name="pop-implicit"),
        pop_dict(user, tmp_path, name="pop-stls", port=dovecot.pop3_port, tls="starttls"),
        imap_account(dovecot, "imap", user.name, user.password, tmp_path),
    ]
    path = write_config(tmp_path, accounts)
    assert main(["check", "--json", "--config", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {a["name"]: a for a in data["accounts"]}
    octets = sum(len(m) for m in msgs)
    for name in ("pop-implicit", "pop-stls"):
        acct = by_name[name]
        assert acct["ok"] and acct["protocol"] == "pop3" and acct["error"] is None
        assert acct["folders"] == [
            {"name": "INBOX", "messages": 12, "size_bytes": octets, "special_use": None}
        ]
        assert acct["quota"] == [
            {"root": "configured", "resource": "STORAGE", "usage": octets, "limit": 10 * MiB}
        ]
        assert acct["usage_ratio"] == pytest.approx(octets / (10 * MiB))
        assert any("STAT" in note for note in acct["notes"])
    imap_inbox = next(f for f in by_name["imap"]["folders"] if f["name"] == "INBOX")
    assert (imap_inbox["messages"], imap_inbox["size_bytes"]) == (12, octets)
    used_kib, _limit = dovecot.quota_get(user.name)["STORAGE"]
    assert used_kib == -(-octets // 1024), (
        "STAT octets agree with the quota usage (KiB, rounded up)"
    )
    assert dovecot.quota_get(user.name)["MESSAGE"][0] == 12
    assert main(["check", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "pop-implicit  pop3" in table and "pop-stls" in table


def test_quota_from_imap_with_sasl_authzid(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(3)])
    dovecot = user.dovecot
    acct = pop_account(
        user, tmp_path, username=dovecot.master_user, authorize_as=user.name, quota=None,
        quota_from_imap=True, imap_port=dovecot.imaps_port,
    )  # fmt: skip
    with Pop3Session.connect(acct, SecretStr(dovecot.master_password)) as session:
        quota, notes = session.quota()
        (inbox,) = session.folders()
    used_kib, limit_kib = dovecot.quota_get(user.name)["STORAGE"]
    assert [(q.root, q.resource, q.usage, q.limit) for q in quota] == [
        ("User quota", "STORAGE", used_kib * 1024, limit_kib * 1024)
    ]
    assert notes[0] == f"quota read over IMAP {dovecot.host}:{dovecot.imaps_port} (quota_from_imap)"
    assert inbox.messages == 3, "authorized as the user: the user's INBOX"


def test_master_user_login(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(1)])
    dovecot = user.dovecot
    acct = pop_account(user, tmp_path, username=f"{user.name}*{dovecot.master_user}")
    with Pop3Session.connect(acct, SecretStr(dovecot.master_password)) as session:
        assert session.folders()[0].messages == 1
        assert {"UIDL", "TOP"} <= session.capabilities()


def test_wrong_password_is_auth_error_without_secrets(
    tmp_path: Path, user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-77"
    config = write_config(tmp_path, [pop_dict(user, tmp_path)])
    secret_file(tmp_path / "secrets", user.name, wrong)
    (account,) = all_accounts(load_config(config), str(config))
    with caplog.at_level(logging.DEBUG):
        report = check_account(account, SecretCache())
    assert report.reason == "auth" and report.error is not None
    assert report.error == f"{user.name}: login failed: the server refused the credentials [AUTH]"
    everything = report.error + caplog.text + json.dumps(report.to_json())
    assert wrong not in everything and user.password not in everything


def test_untrusted_certificate_refused_before_credentials(tmp_path: Path, user: Any) -> None:
    log_file = Path(user.dovecot.base_dir) / "dovecot.log"
    before = log_file.read_text(errors="replace")
    with pytest.raises(TLSError) as info:
        connect(user, tmp_path, ca_file=str(user.dovecot.other_ca_file))
    assert "certificate" in str(info.value) and info.value.reason == "tls"
    assert f"user=<{user.name}>" not in log_file.read_text(errors="replace")[len(before) :]


class _NoStlsHandler(socketserver.StreamRequestHandler):
    """A POP3 greeting peer without STLS that records every command it receives."""

    def handle(self) -> None:
        received: list[str] = self.server.received  # type: ignore[attr-defined]
        self.wfile.write(b"+OK plain POP3 ready\r\n")
        for raw in self.rfile:
            line = raw.decode(errors="replace").strip()
            received.append(line)
            if line.upper() == "CAPA":
                self.wfile.write(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\nSASL PLAIN\r\n.\r\n")
            elif line.upper() == "QUIT":
                self.wfile.write(b"+OK bye\r\n")
                return
            else:
                self.wfile.write(b"-ERR not here\r\n")


@pytest.fixture
def no_stls_server() -> Iterator[socketserver.ThreadingTCPServer]:
    """Dovecot 2.3 offers STLS on every plaintext listener once ssl=yes, so the sandbox cannot
    hide it; this real loopback peer stands in for a server without STLS."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NoStlsHandler)
    server.daemon_threads = True
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_stls_missing_refused_before_credentials(
    tmp_path: Path, user: Any, no_stls_server: socketserver.ThreadingTCPServer
) -> None:
    port = no_stls_server.server_address[1]
    with pytest.raises(TLSError) as info:
        connect(user, tmp_path, host="127.0.0.1", port=port, tls="starttls")
    assert "does not offer STLS" in str(info.value)
    no_stls_server.shutdown()  # waits for serve_forever; the handler saw the connection close
    received = no_stls_server.received  # type: ignore[attr-defined]
    assert received[:1] == ["CAPA"]
    assert not [c for c in received if c.split()[0].upper() in ("USER", "PASS", "AUTH", "APOP")]
    assert all(user.password not in c for c in received)


# ----------------------------------------------------------------------------- selection


def test_sent_age_reads_date_headers_only_for_size_matches(tmp_path: Path, user: Any) -> None:
    dates = ["Tue, 5 Mar 2019 08:00:00 +0100", "Sat, 1 Jun 2024 11:00:00 +0000", "garbage", None]
    msgs = [message(i, 300 + 3000 * (i % 2), d) for i, d in enumerate(dates * 2)]
    deliver(user, msgs)
    with connect(user, tmp_path) as session:
        sel = session.select_candidates(
            "INBOX", SearchQuery(before=T0 - timedelta(days=30), age="sent")
        )
        big = session.select_candidates("INBOX", SearchQuery(age="sent", larger_than=2000))
    assert sel.age_applied and sel.total_messages == 8 and len(sel.all_uids) == 8
    assert [c.date for c in sel.candidates] == [datetime(2019, 3, 5, 7, tzinfo=UTC)] * 2
    assert [c.size for c in sel.candidates] == [len(msgs[0]), len(msgs[4])]
    uidls = list(sel.all_uids)
    assert [c.uid for c in sel.candidates] == [uidls[0], uidls[4]]
    assert all(isinstance(u, str) for u in uidls)
    # larger_than before TOP; then no date, no candidate (garbage and missing Date headers)
    assert [c.uid for c in big.candidates] == [uidls[1], uidls[5]]


def test_saved_age_leaves_dating_to_first_seen(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(4)])
    with connect(user, tmp_path) as session:
        sel = session.select_candidates("INBOX", SearchQuery(before=T0, age="saved"))
        with pytest.raises(ProtocolError, match="POP3 has only INBOX"):
            session.select_candidates("Trash", SearchQuery())
        with pytest.raises(ProtocolError, match="received has no meaning"):
            session.select_candidates("INBOX", SearchQuery(age="received"))
    assert not sel.age_applied and sel.uidvalidity is None and sel.notes == ()
    assert len(sel.candidates) == 4 and all(c.date is None for c in sel.candidates)
    assert tuple(c.uid for c in sel.candidates) == sel.all_uids


def test_first_seen_aging_and_guard(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(3)])
    acct = pop_account(user, tmp_path)
    state = State(tmp_path / "state")

    def allowed(now: datetime) -> list[str]:
        with Pop3Session.connect(acct, SecretStr(user.password)) as session:
            sel = session.select_candidates("INBOX", SearchQuery())
        seen = state.first_seen(acct.name, "INBOX", 0, sel.all_uids, now)
        ok, _notes = guard_candidates(acct, sel.candidates, seen, now)
        return [str(c.uid) for c in ok]

    first = server_view(user, tmp_path)[2]
    assert allowed(T0) == [], "just seen: the client may not have fetched them"
    assert allowed(T0 + timedelta(days=6, hours=23)) == []
    deliver(user, [message(10)])
    assert allowed(T0 + timedelta(days=7)) == first, "the new one was first seen at day 7"
    everything = server_view(user, tmp_path)[2]
    assert allowed(T0 + timedelta(days=14)) == everything
    state.close()


# ----------------------------------------------------------------------------- DELE and QUIT


@pytest.mark.parametrize("cut", ["close", "kick"])
def test_connection_cut_after_dele_keeps_every_message(tmp_path: Path, user: Any, cut: str) -> None:
    deliver(user, [message(i) for i in range(5)])
    before = server_view(user, tmp_path)
    session = connect(user, tmp_path)
    assert session.deferred_deletes is True
    assert session.delete("INBOX", None, before[2]) == 5
    if cut == "close":
        session.close()
    else:
        user.dovecot.kill_user_sessions(user.name)
        with pytest.raises(MailboxError):  # Dovecot says "-ERR [SYS/TEMP] Server shutting down"
            session.commit()
        session.close()
    assert server_view(user, tmp_path) == before


def test_commit_deletes_exactly_the_marked(tmp_path: Path, user: Any) -> None:
    msgs = [message(i, 500 + 100 * i) for i in range(5)]
    deliver(user, msgs)
    _count, _octets, uidls = server_view(user, tmp_path)
    with connect(user, tmp_path) as session:
        assert session.delete("INBOX", None, [uidls[1], uidls[3]]) == 2
        assert set(session.message_meta("INBOX", None, uidls)) == {uidls[0], uidls[2], uidls[4]}
        session.commit()
        # after QUIT, sizes come from a new connection, so they show what was deleted
        assert session.folders()[0].messages == 3
    remaining = server_view(user, tmp_path)
    assert remaining[2] == [uidls[0], uidls[2], uidls[4]]
    assert remaining[1] == sum(len(msgs[i]) for i in (0, 2, 4))


def test_uidls_gone_meanwhile_are_dropped(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(4)])
    uidls = server_view(user, tmp_path)[2]  # the plan was made from this list
    with connect(user, tmp_path) as other_client:
        other_client.delete("INBOX", None, [uidls[0]])
        other_client.commit()
    with connect(user, tmp_path) as session:
        kept: dict[int | str, str] = {}
        assert session.delete("INBOX", None, uidls[:2], kept=kept) == 1
        assert list(kept) == [uidls[0]] and "no longer on the server" in kept[uidls[0]]
        session.commit()
    assert server_view(user, tmp_path)[2] == uidls[2:]


def test_refused_dele_blocks_quit(
    tmp_path: Path, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(user, [message(i) for i in range(3)])
    before = server_view(user, tmp_path)
    session = connect(user, tmp_path)
    real_dele = session._client.dele
    calls: list[int] = []

    def dele(number: int) -> bytes:
        calls.append(number)
        if len(calls) == 2:  # the server refuses the second DELE (fault injected client-side)
            raise poplib.error_proto(b"-ERR [SYS/TEMP] simulated refusal")
        return real_dele(number)

    monkeypatch.setattr(session._client, "dele", dele)
    with pytest.raises(TemporaryServerError):
        session.delete("INBOX", None, before[2])
    with pytest.raises(SafetyStop, match="not sending QUIT after a refused DELE"):
        session.commit()
    session.close()
    assert server_view(user, tmp_path) == before


def test_fetch_message_is_the_exact_message(tmp_path: Path, user: Any) -> None:
    msgs = [message(1, 5000), b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n"]
    deliver(user, msgs)
    uidls = server_view(user, tmp_path)[2]
    with connect(user, tmp_path) as session:
        assert [session.fetch_message("INBOX", None, u) for u in uidls] == msgs
        meta = session.message_meta("INBOX", None, uidls)
    assert meta[uidls[0]].message_id == "<pop1@example.org>"
    assert meta[uidls[0]].internaldate == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert (meta[uidls[1]].size, meta[uidls[1]].internaldate) == (len(msgs[1]), None)


def test_pipelined_top_stays_in_step_after_an_error(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(5)])
    uidls = server_view(user, tmp_path)[2]
    with connect(user, tmp_path) as session:
        assert "PIPELINING" in session.capabilities()
        session.delete("INBOX", None, [uidls[1]])  # TOP 2 now answers -ERR
        with pytest.raises(ProtocolError, match="TOP 2 0"):
            session._headers([1, 2, 3, 4, 5])
        assert session.folders()[0].messages == 4, "every answer of the pipeline was read"
        meta = session.message_meta("INBOX", None, uidls)
    assert sorted(meta) == sorted(uidls[:1] + uidls[2:])
    assert {m.message_id for m in meta.values()} == {f"<pop{i}@example.org>" for i in (0, 2, 3, 4)}
