"""OAuth2 for warning mails (SMTP AUTH XOAUTH2 and OAUTHBEARER via authlib), and no token or client secret anywhere but the token cache."""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from quotawatch.config import Account, load_config
from quotawatch.config.sources import all_accounts
from quotawatch.mail.oauth2.tokens import STORE_NAME, secret_cache
from quotawatch.service.jobs import run_account
from quotawatch.service.metrics import Counters, Histogram, StateCollector
from quotawatch.state import State
from quotawatch.warnings.mailer import Mailer
from quotawatch.warnings.notify import process_warnings
from sandbox.dovecot import Dovecot
from sandbox.oauth_server import OAuthServer
from sandbox.smtp import SmtpSink
from tests.support import secret_file, write_config

MAIL_SECRET = "mail-app-Secret-" + secrets.token_urlsafe(10)
SMTP_SECRET = "smtp-app-Secret-" + secrets.token_urlsafe(10)
NOW = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _trust_provider(oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth.ca_file))


def token_checker(oauth: OAuthServer):  # type: ignore[no-untyped-def]
    """The sink's judge: the provider's introspection answer, as Exchange would check it."""

    def check(user: str, token: str) -> bool:
        _status, answer = oauth.introspect({"token": token})
        return bool(answer.get("active")) and f",{user}," in str(answer.get("mailboxes"))

    return check


ENCODERS = (base64.b64encode, base64.urlsafe_b64encode)


def encoded_middles(raw: bytes, encode: Any) -> set[bytes]:
    """What every encoding of a string that carries ``raw`` contains, whatever comes before or
    after it: for each of the 3 alignments (``raw`` starting at a byte offset 0, 1 or 2 modulo 3),
    the characters of the 3-byte groups made of ``raw``'s bytes only."""
    out = set()
    for offset in (0, 1, 2):
        first = -offset % 3  # bytes of raw in the group it starts in, when that is shared
        whole = (len(raw) - first) // 3  # groups of raw's bytes only
        start = (offset + first) // 3 * 4
        middle = encode(b"\0" * offset + raw)[start : start + whole * 4]
        assert len(middle) >= 8, "too short a secret to look for"
        out.add(middle)
    return out


def forms(value: str) -> set[bytes]:
    """A secret as it could leak: plain, or inside anything base64 or base64url encoded (a SASL
    XOAUTH2/OAUTHBEARER message, a basic-auth header) at any of the 3 alignments."""
    raw = value.encode()
    return {raw} | {m for encode in ENCODERS for m in encoded_middles(raw, encode)}


@pytest.mark.parametrize("encode", ENCODERS)
def test_forms_find_a_secret_at_every_alignment(encode: Any) -> None:
    """The check below proves what it says: a secret after any prefix is found, encoded."""
    value = "tok-" + secrets.token_urlsafe(24)
    for before in ("", "a", "ab", "abc", "user=x\x01auth=Bearer ", "n,a=u,\x01auth=Bearer "):
        for after in ("", "\x01", "\x01\x01"):
            data = encode(f"{before}{value}{after}".encode())
            assert [f for f in forms(value) if f in data], (before, after)
    assert not [f for f in forms(value) if f in encode(b"x" * 200)]


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_warning_mail_over_smtp_oauth2_and_no_secret_leaks(
    mechanism: str,
    tmp_path: Path,
    oauth: OAuthServer,
    dovecot_oauth2: Dovecot,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug output too
    name, stranger = f"leak{secrets.token_hex(3)}", f"nogrant{secrets.token_hex(3)}"
    for user in (name, stranger):
        dovecot_oauth2.add_user(user, secrets.token_urlsafe(12), quota_bytes=200_000)
        msg = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"x" * 60_000 + b"\r\n"
        dovecot_oauth2.deliver_bulk(user, "INBOX", [(msg, NOW, "S")])
    mail_app, smtp_app = f"mail-{secrets.token_hex(3)}", f"smtp-{secrets.token_hex(3)}"
    oauth.register_client(mail_app, secret=MAIL_SECRET, mailboxes=(name,))
    oauth.register_client(smtp_app, secret=SMTP_SECRET, mailboxes=("quotawatch@example.org",))
    sink = SmtpSink(tmp_path / "smtp", oauth2=token_checker(oauth)).start()
    try:
        secrets_dir = tmp_path / "secrets"
        mail_block = {
            "provider": "microsoft", "client_id": mail_app, "tenant": oauth.tenant,
            "authority": oauth.authority, "timeout": 10,
            "client_secret_file": str(secret_file(secrets_dir, "mail", MAIL_SECRET)),
        }  # fmt: skip
        accounts = [
            {"name": user, "host": dovecot_oauth2.host, "port": dovecot_oauth2.imaps_port,
             "ca_file": str(dovecot_oauth2.ca_file), "username": user, "auth": "oauth2",
             "oauth2": mail_block, "email": f"{user}@example.org", "timeout": 30}
            for user in (name, stranger)
        ]  # fmt: skip
        smtp = {
            "host": sink.host, "port": sink.port, "tls": "starttls", "ca_file": str(sink.ca_file),
            "username": "quotawatch@example.org", "auth": "oauth2", "from": "quotawatch@example.org",
            "timeout": 10,
            "oauth2": {"provider": "generic", "client_id": smtp_app, "timeout": 10,
                       "token_endpoint": oauth.token_endpoint, "scopes": ["SMTP.Send"],
                       "mechanism": mechanism,
                       "client_secret_env": "QW_SMTP_APP_SECRET"},
        }  # fmt: skip
        warnings = {"thresholds": ["20%"], "rearm_below": "10%", "language": "en"}
        path = write_config(tmp_path, accounts, smtp=smtp, warnings=warnings)
        monkeypatch.setenv("QW_SMTP_APP_SECRET", SMTP_SECRET)
        config = load_config(path)
        cache = secret_cache(config, str(path))
        state, counters = State(config.state_dir), Counters()
        assert config.smtp is not None
        mailer = Mailer(config.smtp, cache)

        def hook(
            account: Account, report: Any, plan: Any, now: datetime, cleanup: Any = None
        ) -> None:
            process_warnings(account, report, plan, state, config, now, mailer, counters=counters)

        results = {
            a.name: run_account(a, config, state, cache, cleanup=False, now=NOW, warn=hook)
            for a in all_accounts(config, str(path))
        }
        assert results[name].ok, results[name].failures
        assert results[stranger].report.reason == "auth"  # fails alone
        (mail,) = sink.messages
        assert mail.rcpt_tos == (f"{name}@example.org",)
        assert sink.oauth2_logins == [(mechanism.upper(), "quotawatch@example.org")]

        registry = CollectorRegistry()
        collector = StateCollector(state, counters, Histogram(), lambda: True)
        collector.configure([name, stranger], 10, False, {})
        registry.register(collector)
        metrics = generate_latest(registry)
        state.close()
    finally:
        sink.stop()

    leaked = [*oauth.tokens, *oauth.refresh_tokens, MAIL_SECRET, SMTP_SECRET]
    assert len(oauth.tokens) >= 2
    places: dict[str, bytes] = {
        "log": caplog.text.encode(),
        "metrics": metrics,
        "mail": b"".join(m.raw for m in sink.messages),
        "reports": repr([r.report.to_json() for r in results.values()]).encode(),
    }
    for file in config.state_dir.rglob("*"):
        if file.is_file() and STORE_NAME not in file.parts:  # the token cache holds them by design
            places[str(file.relative_to(config.state_dir))] = file.read_bytes()
    assert "state.sqlite3" in places
    for where, data in places.items():
        for value in leaked:
            found = [f for f in forms(value) if f in data]
            assert not found, f"a secret ({value[:12]}…) appears in {where}"
