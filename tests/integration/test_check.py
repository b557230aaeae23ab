"""`quotawatch check` against the real sandbox Dovecot: quota, folder sizes, login modes, failures."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.cli import main
from quotawatch.config import load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.service.jobs import check_account, check_accounts
from tests.support import imap_account, write_config

NOW = datetime.now(UTC)


def message(i: int, size: int) -> bytes:
    head = (
        f"From: sender{i}@example.org\r\nTo: user@example.org\r\nSubject: message {i}\r\n"
        f"Message-ID: <{i}.{size}@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    ).encode()
    body = b"".join(b"line %06d of the body\r\n" % n for n in range(size // 24 + 1))
    return head + body


def fill(user: Any) -> dict[str, tuple[int, int]]:
    """Put messages in several folders; return {folder: (messages, bytes)} as appended."""
    layout = {"INBOX": 40, "Trash": 15, "Junk": 7, "Archiv 2023": 5, "Entwürfe/Ältere": 3}
    expected = {}
    for folder, count in layout.items():
        msgs = [message(i, 500 + 300 * i) for i in range(count)]
        user.dovecot.deliver_bulk(
            user.name, folder, [(m, NOW - timedelta(days=i), "S") for i, m in enumerate(msgs)]
        )
        expected[folder] = (count, sum(len(m) for m in msgs))
    return expected


def config_for(tmp_path: Path, user: Any, **overrides: Any) -> Path:
    acct = imap_account(user.dovecot, user.name, user.name, user.password, tmp_path, **overrides)
    return write_config(tmp_path, [acct])


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def report_for(config_path: Path) -> Any:
    config = load_config(config_path)
    (account,) = all_accounts(config, str(config_path))
    return check_account(account, SecretCache())


def test_quota_and_sizes_match_server(
    tmp_path: Path, user: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = fill(user)
    code, data = run_json(capsys, "--config", str(config_for(tmp_path, user)))
    assert code == 0
    (acct,) = data["accounts"]
    assert acct["ok"] is True and acct["error"] is None and acct["protocol"] == "imap"
    used_kib, limit_kib = user.dovecot.quota_get(user.name)["STORAGE"]
    storage = [q for q in acct["quota"] if q["resource"] == "STORAGE"]
    assert storage == [
        {
            "root": "User quota",
            "resource": "STORAGE",
            "usage": used_kib * 1024,
            "limit": limit_kib * 1024,
        }
    ]
    folders = {f["name"]: f for f in acct["folders"]}
    for name, (count, size) in expected.items():
        assert (folders[name]["messages"], folders[name]["size_bytes"]) == (count, size), name
    assert folders["Trash"]["special_use"] == "\\Trash"
    assert folders["Junk"]["special_use"] == "\\Junk"
    assert folders["INBOX"]["special_use"] is None
    sizes = [f["size_bytes"] for f in acct["folders"]]
    assert sizes == sorted(sizes, reverse=True), "folders are listed largest first"


def test_message_quota_resource(tmp_path: Path, dovecot: Any) -> None:
    dovecot.add_user("msgquota", "pw-msgquota-1", quota_bytes=10 * 1024 * 1024, quota_messages=100)
    dovecot.deliver_bulk("msgquota", "INBOX", [(message(i, 100), NOW, "") for i in range(12)])
    acct = imap_account(dovecot, "msgquota", "msgquota", "pw-msgquota-1", tmp_path)
    report = report_for(write_config(tmp_path, [acct]))
    assert report.ok
    resources = {q.resource: (q.usage, q.limit) for q in report.snapshot.quota}
    assert resources["MESSAGE"] == (12, 100)


def test_fallback_without_status_size_gives_same_numbers(
    tmp_path: Path, user: Any, dovecot_nosize: Any
) -> None:
    dovecot_nosize.add_user(user.name, user.password, quota_bytes=10 * 1024 * 1024)
    from types import SimpleNamespace

    expected = fill(SimpleNamespace(name=user.name, dovecot=dovecot_nosize))
    fast = report_for(
        config_for(
            tmp_path / "a",
            SimpleNamespace(name=user.name, password=user.password, dovecot=dovecot_nosize),
        )
    )
    assert fast.ok, fast.error
    got = {f.name: (f.messages, f.size_bytes) for f in fast.snapshot.folders}
    for name, numbers in expected.items():
        assert got[name] == numbers, name


def test_status_per_folder_without_list_status_gives_same_numbers(
    tmp_path: Path, user: Any, dovecot_nolist: Any
) -> None:
    from types import SimpleNamespace

    from quotawatch.mail.imap.session import ImapSession

    dovecot_nolist.add_user(user.name, user.password, quota_bytes=10 * 1024 * 1024)
    sandbox_user = SimpleNamespace(name=user.name, password=user.password, dovecot=dovecot_nolist)
    with ImapSession.connect(load_config_account(dovecot_nolist, user), _pw(user.password)) as s:
        assert "LIST-STATUS" not in s.capabilities() and "STATUS=SIZE" in s.capabilities()
    expected = fill(sandbox_user)
    report = report_for(config_for(tmp_path, sandbox_user))
    assert report.ok, report.error
    got = {f.name: (f.messages, f.size_bytes) for f in report.snapshot.folders}
    for name, numbers in expected.items():
        assert got[name] == numbers, name
    assert {f.name: f.special_use for f in report.snapshot.folders}["Trash"] == "\\Trash"


def test_status_size_path_advertised(dovecot: Any, user: Any) -> None:
    from quotawatch.mail.imap.session import ImapSession

    acct = load_config_account(dovecot, user)
    with ImapSession.connect(acct, _pw(user.password)) as session:
        caps = session.capabilities()
    assert {"QUOTA", "STATUS=SIZE", "UIDPLUS", "SPECIAL-USE"} <= caps


def test_fallback_capabilities_hidden(dovecot_nosize: Any, user: Any) -> None:
    from quotawatch.mail.imap.session import ImapSession

    dovecot_nosize.add_user(user.name + "x", user.password)
    acct = load_config_account(dovecot_nosize, user, username=user.name + "x")
    with ImapSession.connect(acct, _pw(user.password)) as session:
        caps = session.capabilities()
    assert "STATUS=SIZE" not in caps and "SAVEDATE" not in caps and "UIDPLUS" in caps


def load_config_account(dovecot: Any, user: Any, **overrides: Any) -> Any:
    from quotawatch.config import Account

    data = {
        "name": user.name,
        "host": dovecot.host,
        "port": dovecot.imaps_port,
        "ca_file": str(dovecot.ca_file),
        "username": user.name,
        "password_env": "UNUSED",
        "connect_timeout": 5,
        "timeout": 30,
    }
    data.update(overrides)
    return Account.model_validate(data)


def _pw(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@pytest.mark.parametrize("mode", ["master", "authzid", "starttls"])
def test_login_modes(tmp_path: Path, user: Any, mode: str) -> None:
    dovecot = user.dovecot
    overrides: dict[str, Any] = {}
    username, password = user.name, user.password
    if mode == "master":
        username, password = f"{user.name}*{dovecot.master_user}", dovecot.master_password
    elif mode == "authzid":
        username, password = dovecot.master_user, dovecot.master_password
        overrides = {"authorize_as": user.name}
    else:
        overrides = {"port": dovecot.imap_port, "tls": "starttls"}
    dovecot.deliver_bulk(user.name, "INBOX", [(message(1, 1000), NOW, "")])
    acct = imap_account(dovecot, user.name, username, password, tmp_path, **overrides)
    report = report_for(write_config(tmp_path, [acct]))
    assert report.ok, report.error
    inbox = next(f for f in report.snapshot.folders if f.name == "INBOX")
    assert inbox.messages == 1, "logged in as the user, seeing the user's mailbox"


def test_failures_are_per_account(
    tmp_path: Path,
    user: Any,
    dovecot: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = imap_account(dovecot, "good", user.name, user.password, tmp_path)
    wrong = imap_account(dovecot, "wrong-password", user.name, "not-the-password-42", tmp_path)
    untrusted = imap_account(
        dovecot, "untrusted", user.name, user.password, tmp_path, ca_file=str(dovecot.other_ca_file)
    )
    dead = imap_account(dovecot, "dead", user.name, user.password, tmp_path, port=closed_port())
    path = write_config(tmp_path, [wrong, good, untrusted, dead])
    with caplog.at_level(logging.DEBUG):
        code, data = run_json(capsys, "--config", str(path))
    assert code == 1
    by_name = {a["name"]: a for a in data["accounts"]}
    assert [a["name"] for a in data["accounts"]] == ["wrong-password", "good", "untrusted", "dead"]
    assert by_name["good"]["ok"] is True
    assert by_name["wrong-password"]["ok"] is False
    assert "the server refused the credentials" in by_name["wrong-password"]["error"]
    assert by_name["wrong-password"]["reason"] == "auth"
    assert "certificate" in by_name["untrusted"]["error"]
    assert by_name["untrusted"]["reason"] == "tls"
    assert by_name["dead"]["reason"] == "connect"
    for a in data["accounts"]:
        assert "\n" not in (a["error"] or "")
    everything = json.dumps(data) + caplog.text
    assert user.password not in everything and "not-the-password-42" not in everything


def test_untrusted_certificate_refused_before_credentials(tmp_path: Path, user: Any) -> None:
    log = Path(user.dovecot.base_dir) / "dovecot.log"
    before = log.read_text(errors="replace") if log.exists() else ""
    acct = imap_account(
        user.dovecot,
        "untrusted",
        user.name,
        user.password,
        tmp_path,
        ca_file=str(user.dovecot.other_ca_file),
    )
    report = report_for(write_config(tmp_path, [acct]))
    assert report.reason == "tls"
    after = log.read_text(errors="replace") if log.exists() else ""
    new = after[len(before) :]
    assert f"user=<{user.name}>" not in new, "no login attempt reached the server"


def test_server_without_quota_is_a_note_not_a_failure(tmp_path: Path, dovecot_noquota: Any) -> None:
    dovecot_noquota.add_user("noquota", "pw-noquota-1")
    acct = imap_account(dovecot_noquota, "noquota", "noquota", "pw-noquota-1", tmp_path)
    report = report_for(write_config(tmp_path, [acct]))
    assert report.ok, report.error
    assert report.snapshot.quota == ()
    assert any("QUOTA" in note for note in report.snapshot.notes)


def test_many_accounts_checked_concurrently(tmp_path: Path, dovecot: Any) -> None:
    accounts = []
    for i in range(6):
        name = f"conc{i}"
        dovecot.add_user(name, f"pw-{name}")
        dovecot.deliver_bulk(name, "INBOX", [(message(j, 200), NOW, "") for j in range(i)])
        accounts.append(imap_account(dovecot, name, name, f"pw-{name}", tmp_path))
    path = write_config(tmp_path, accounts)
    config = load_config(path)
    reports = list(check_accounts(all_accounts(config, str(path)), SecretCache(), concurrency=4))
    assert [r.name for r in reports] == [f"conc{i}" for i in range(6)]
    assert [
        next(f.messages for f in r.snapshot.folders if f.name == "INBOX") for r in reports
    ] == list(range(6))


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_starttls_missing_is_refused_before_credentials(tmp_path: Path) -> None:
    """A real (tiny) IMAP peer that does not offer STARTTLS: no LOGIN may reach it."""
    import socketserver
    import threading

    received: list[bytes] = []

    class NoStartTls(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGIN] no TLS here\r\n")
            for line in self.rfile:
                received.append(line)
                tag = line.split(b" ", 1)[0]
                if b"CAPABILITY" in line.upper():
                    self.wfile.write(
                        b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
                    )
                elif b"LOGOUT" in line.upper():
                    self.wfile.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    self.wfile.write(tag + b" NO not here\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), NoStartTls) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        acct = {
            "name": "plain-server",
            "host": "127.0.0.1",
            "port": port,
            "tls": "starttls",
            "username": "alice",
            "password_file": str(tmp_path / "s" / "pw"),
            "connect_timeout": 5,
            "timeout": 5,
        }
        from tests.support import secret_file

        secret_file(tmp_path / "s", "x", "never-send-me-123")
        acct["password_file"] = str(tmp_path / "s" / "x.secret")
        report = report_for(write_config(tmp_path, [acct]))
        server.shutdown()
    assert report.reason == "tls"
    assert "STARTTLS" in report.error
    assert not any(b"LOGIN" in line.upper() or b"AUTHENTICATE" in line.upper() for line in received)
    assert not any(b"never-send-me" in line for line in received)
