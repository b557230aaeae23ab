"""Non-ASCII passwords log in (SASL PLAIN, UTF-8) on IMAP, POP3 and SMTP, and never leak anywhere.

The leak sweep looks for the password, its UTF-8 bytes, escaped forms and the base64 forms that
travel on the wire (the password alone and the whole PLAIN message) in DEBUG logs, the CLI's
JSON, every file of the state directory, the metrics exposition and the mails sent, for the right
and for a wrong non-ASCII password.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from quotawatch.cli import main
from quotawatch.config import Account, Smtp, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.errors import AuthError, MailError
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.pop3.session import Pop3Session
from quotawatch.service.metrics import Counters, Histogram, StateCollector
from quotawatch.state import State
from quotawatch.warnings.mailer import Mailer, build_message
from quotawatch.warnings.render import Rendered
from sandbox.dovecot import Dovecot
from sandbox.smtp import SmtpSink
from tests.support import imap_account, secret_file, write_config

PASSWORD = "pässwörd€"
WRONG = "wröng€pässwort"
SMTP_USER = "quotawatch"
SMTP_PASSWORD = "smtp-pässwörd€"
SMTP_WRONG = "smtp-wröng€"
FIXED_REFUSAL = "login failed: the server refused the credentials"


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def leak_forms(user: str, password: str) -> list[str]:
    """Every form of ``password`` that must never be seen (plus its characters' escapes)."""
    forms = [
        password,
        _b64(password),
        _b64(f"\0{user}\0{password}"),
        _b64(f"{user}\0{user}\0{password}"),
        ascii(password)[1:-1],  # p\xe4ssw\xf6rd\u20ac
        json.dumps(password)[1:-1],  # p\u00e4ssw\u00f6rd\u20ac
        password.encode().decode("latin-1"),  # UTF-8 bytes shown as Latin-1
        repr(password.encode())[2:-1],  # p\xc3\xa4ssw...
    ]
    return forms


def sweep(where: str, text: str | bytes, forms: list[str]) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    for form in forms:
        assert form.encode() not in data, f"{form!r} found in {where}"
    assert b"codec can't encode" not in data, f"an encoding error shown in {where}"


@pytest.fixture
def odd_user(dovecot: Dovecot) -> str:
    name = f"odd{secrets.token_hex(3)}"
    dovecot.add_user(name, PASSWORD)
    return name


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    server = SmtpSink(tmp_path / "smtp", starttls=True, auth={SMTP_USER: SMTP_PASSWORD}).start()
    yield server
    server.stop()


def _accounts(dovecot: Dovecot, user: str, directory: Path) -> list[dict[str, Any]]:
    def pop(name: str, password: str) -> dict[str, Any]:
        return imap_account(
            dovecot, name, user, password, directory,
            protocol="pop3", port=dovecot.pop3s_port, quota="10MiB",
        )  # fmt: skip

    ok = imap_account(
        dovecot, "imap-ok", user, PASSWORD, directory,
        email=f"{user}@example.org", rules=["trash-30d"],
    )  # fmt: skip
    return [
        ok,
        pop("pop-ok", PASSWORD),
        imap_account(dovecot, "imap-wrong", user, WRONG, directory),
        pop("pop-wrong", WRONG),
    ]


def _config(directory: Path, dovecot: Dovecot, user: str, sink: SmtpSink, smtp_pw: str) -> Path:
    smtp = {
        "host": sink.host, "port": sink.port, "tls": "starttls", "ca_file": str(sink.ca_file),
        "username": SMTP_USER, "from": "Mail service <postmaster@example.org>", "timeout": 10,
        "password_file": str(secret_file(directory / "secrets", "smtp", smtp_pw)),
    }  # fmt: skip
    rules = {
        "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received",
                      "max_delete_fraction": "100%"},
    }  # fmt: skip
    warnings = {"thresholds": ["50MB free"], "language": "en"}
    return write_config(
        directory, _accounts(dovecot, user, directory), rules=rules, smtp=smtp, warnings=warnings
    )


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "debug", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _exposition(config_path: Path) -> bytes:
    config = load_config(config_path)
    state = State(config.state_dir)
    try:
        collector = StateCollector(state, Counters(), Histogram())
        collector.configure([a.name for a in all_accounts(config, str(config_path))], 10, True)
        registry = CollectorRegistry()
        registry.register(collector)
        return generate_latest(registry)
    finally:
        state.close()


def test_non_ascii_passwords_log_in_everywhere_and_leak_nowhere(
    tmp_path: Path, dovecot: Dovecot, odd_user: str, sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    old = datetime.now(UTC) - timedelta(days=60)
    message = b"From: a@example.org\r\nSubject: old\r\n\r\nbody\r\n"
    dovecot.deliver_bulk(odd_user, "Trash", [(message, old, "S"), (message, old, "S")])
    good = _config(tmp_path / "good", dovecot, odd_user, sink, SMTP_PASSWORD)
    bad_smtp = _config(tmp_path / "bad", dovecot, odd_user, sink, SMTP_WRONG)
    shown: list[tuple[str, str]] = []

    code, out, err = _cli(capsys, "check", "--json", "-c", str(good))
    shown += [("check --json", out), ("check log", err)]
    assert code == 1
    by_name = {a["name"]: a for a in json.loads(out)["accounts"]}
    assert by_name["imap-ok"]["error"] is None and by_name["pop-ok"]["error"] is None
    for name in ("imap-wrong", "pop-wrong"):
        assert by_name[name]["reason"] == "auth"
        assert by_name[name]["error"].startswith(f"{name}: {FIXED_REFUSAL}")

    code, out, err = _cli(capsys, "cleanup", "--apply", "--json", "-c", str(good))
    shown += [("cleanup --json", out), ("cleanup log", err)]
    cleaned = {a["name"]: a for a in json.loads(out)["accounts"]}
    assert cleaned["imap-ok"]["cleanup"]["errors"] == []
    assert sum(d["messages"] for d in cleaned["imap-ok"]["cleanup"]["done"]) == 2

    code, out, err = _cli(capsys, "warn", "-c", str(good), "--account", "imap-ok")
    shown += [("warn", out), ("warn log", err)]
    assert code == 0 and len(sink.messages) == 1, out + err

    code, out, err = _cli(capsys, "warn", "-c", str(bad_smtp), "--account", "imap-ok")
    shown += [("warn with a wrong SMTP password", out), ("its log", err)]
    assert code == 1 and FIXED_REFUSAL in out and len(sink.messages) == 1
    assert sink.auth_failures >= 1

    pairs = [(odd_user, PASSWORD), (odd_user, WRONG), (SMTP_USER, SMTP_PASSWORD)]
    forms = [f for user, pw in [*pairs, (SMTP_USER, SMTP_WRONG)] for f in leak_forms(user, pw)]
    for where, text in shown:
        sweep(where, text, forms)
    for directory in (tmp_path / "good" / "state", tmp_path / "bad" / "state"):
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" or "sqlite" in p.name for p in files) or files
        for path in files:
            sweep(str(path), path.read_bytes(), forms)
    sweep("metrics", _exposition(good), forms)
    sweep("metrics", _exposition(bad_smtp), forms)
    for mail in sink.messages:
        sweep(f"mail {mail.path}", mail.raw, forms)


def _account(dovecot: Dovecot, user: str, directory: Path, protocol: str) -> Account:
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    data = imap_account(dovecot, protocol, user, "unused", directory, protocol=protocol, port=port)
    if protocol == "pop3":
        data["quota"] = "10MiB"
    return Account.model_validate(data)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_mailbox_login_with_a_non_ascii_password(
    tmp_path: Path, dovecot: Dovecot, odd_user: str, protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Every logger at DEBUG, imapclient's and poplib's included; the wrong password's error."""
    caplog.set_level(logging.DEBUG)
    for name in ("imapclient", "imapclient.imaplib"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    account = _account(dovecot, odd_user, tmp_path, protocol)
    session_class = ImapSession if protocol == "imap" else Pop3Session
    session = session_class.connect(account, SecretStr(PASSWORD))
    session.close()
    with pytest.raises(AuthError) as info:
        session_class.connect(account, SecretStr(WRONG))
    assert str(info.value).startswith(f"{protocol}: {FIXED_REFUSAL}")
    forms = leak_forms(odd_user, PASSWORD) + leak_forms(odd_user, WRONG)
    sweep("the error", f"{info.value!s} {info.value!r} {info.value.args!r}", forms)
    sweep("DEBUG log", caplog.text, forms)


def test_smtp_login_with_a_non_ascii_password(
    tmp_path: Path, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def mailer(password: str) -> Mailer:
        smtp = Smtp.model_validate({
            "host": sink.host, "port": sink.port, "tls": "starttls", "ca_file": str(sink.ca_file),
            "username": SMTP_USER, "from": "postmaster@example.org", "timeout": 10,
            "password_file": str(secret_file(tmp_path / password, "smtp", password)),
        })  # fmt: skip
        return Mailer(smtp, SecretCache())

    mail = build_message(
        Rendered("Quota", "text", "<p>html</p>"), "postmaster@example.org",
        ["user@example.org"], [], datetime.now(UTC),
    )  # fmt: skip
    mailer(SMTP_PASSWORD).send(mail)
    assert len(sink.messages) == 1
    with pytest.raises(MailError) as info:
        mailer(SMTP_WRONG).send(mail)
    assert info.value.reason == "auth" and FIXED_REFUSAL in str(info.value)
    forms = leak_forms(SMTP_USER, SMTP_PASSWORD) + leak_forms(SMTP_USER, SMTP_WRONG)
    sweep("the error", f"{info.value!s} {info.value!r}", forms)
    sweep("DEBUG log", caplog.text, forms)
    sweep("the mail", sink.messages[0].raw, forms)
