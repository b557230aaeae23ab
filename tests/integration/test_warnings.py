"""Warning mails end to end: real checks of sandbox users, a real SMTP sink with STARTTLS and AUTH."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.config import Account, Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.service.jobs import JobResult, run_account
from quotawatch.service.metrics import Counters
from quotawatch.state import State
from quotawatch.warnings.decision import WarningState
from quotawatch.warnings.mailer import Mailer
from quotawatch.warnings.notify import FAILED, SENT, process_warnings
from sandbox.dovecot import SandboxUser
from sandbox.smtp import SmtpSink
from tests.support import counter_value, imap_account, secret_file, write_config

T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
KiB = 1024
MiB = 1024 * KiB
SMTP_USER, SMTP_PASSWORD = "quotawatch", "smtp-Pa55word-never-shown"


def message(i: int, size: int) -> bytes:
    head = (
        f"From: sender{i}@example.org\r\nTo: user@example.org\r\nSubject: message {i}\r\n"
        f"Message-ID: <{i}.{size}@example.org>\r\nDate: Mon, 3 Jun 2024 08:00:00 +0000\r\n\r\n"
    ).encode()
    return head + b"x" * 76 + b"\r\n" + b"".join(b"y" * 76 + b"\r\n" for _ in range(size // 78))


def fill(user: SandboxUser, folder: str, megabytes: float, start: int = 0) -> None:
    """Deliver about ``megabytes`` MiB as 100 KiB messages."""
    count = round(megabytes * 1024 / 100)
    msgs = [message(start + i, 100 * KiB) for i in range(count)]
    user.dovecot.deliver_bulk(user.name, folder, [(m, T0 - timedelta(days=40), "S") for m in msgs])


class Env:
    """One sandbox user watched by quotawatch with warnings to the sink."""

    def __init__(
        self,
        tmp_path: Path,
        user: SandboxUser,
        sink: SmtpSink,
        *,
        warnings: dict[str, Any] | None = None,
        **smtp: Any,
    ) -> None:
        self.user, self.sink = user, sink
        smtp_cfg = {
            "host": sink.host,
            "port": sink.port,
            "tls": "starttls",
            "ca_file": str(sink.ca_file),
            "username": SMTP_USER,
            "password_file": str(secret_file(tmp_path / "secrets", "smtp", SMTP_PASSWORD)),
            "from": "Mail service <postmaster@example.org>",
            "timeout": 10,
        }
        smtp_cfg.update(smtp)
        acct = imap_account(
            user.dovecot, "alice", user.name, user.password, tmp_path,
            email=f"{user.name}@example.org", warning_email=f"{user.name}.private@example.net",
        )  # fmt: skip
        policy = {"thresholds": ["80%", "90%", "95%"], "rearm_below": "75%",
                  "remind_every": "7d", "all_clear": True, "language": "en"}  # fmt: skip
        policy.update(warnings or {})
        path = write_config(tmp_path, [acct], smtp=smtp_cfg, warnings=policy)
        self.config: Config = load_config(path)
        (self.account,) = all_accounts(self.config, str(path))
        self.state = State(self.config.state_dir)
        self.secrets = SecretCache()
        self.counters = Counters()
        self.mailer = Mailer(self.config.smtp, self.secrets)  # type: ignore[arg-type]

    def cycle(self, when: datetime) -> JobResult:
        """One daemon cycle for the account: real check, stored report, then the warn hook."""

        def hook(
            account: Account, report: Any, plan: Any, now: datetime, cleanup: Any = None
        ) -> None:
            process_warnings(
                account, report, plan, self.state, self.config, now, self.mailer,
                counters=self.counters, cleanup=cleanup,
            )  # fmt: skip

        return run_account(
            self.account, self.config, self.state, self.secrets,
            cleanup=False, now=when, warn=hook,
        )  # fmt: skip

    def subjects(self) -> list[str]:
        return [str(m.message["Subject"]) for m in self.sink.messages]

    def count(self, name: str, threshold: str) -> float:
        return (
            counter_value(self.counters, name, {"account": "alice", "threshold": threshold}) or 0.0
        )

    def warning_state(self) -> WarningState:
        return WarningState.from_dict(self.state.warning_state("alice"))


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    server = SmtpSink(tmp_path / "smtp", starttls=True, auth={SMTP_USER: SMTP_PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, user: SandboxUser, sink: SmtpSink) -> Iterator[Env]:
    e = Env(tmp_path, user, sink)
    yield e
    e.state.close()


def test_filling_past_80_percent_sends_exactly_one_warning_with_folders_and_forecast(
    env: Env,
) -> None:
    fill(env.user, "Trash", 1.5)
    fill(env.user, "Projekte/Ältere", 1.0, start=100)
    fill(env.user, "INBOX", 4.0, start=200)
    env.cycle(T0 - timedelta(days=2))  # ~63%: nothing
    fill(env.user, "INBOX", 0.8, start=300)
    env.cycle(T0 - timedelta(days=1))  # ~71%
    fill(env.user, "INBOX", 1.3, start=400)
    for hours in range(0, 4):  # ~84%, four checks
        env.cycle(T0 + timedelta(hours=hours))
    assert len(env.sink.messages) == 1
    mail = env.sink.messages[0]
    msg = mail.message
    assert str(msg["Subject"]).startswith(f"Your mailbox {env.user.name}@example.org is 8")
    assert msg["Auto-Submitted"] == "auto-generated" and msg["Precedence"] == "bulk"
    assert set(mail.rcpt_tos) == {
        f"{env.user.name}@example.org",
        f"{env.user.name}.private@example.net",
    }
    text = " ".join(msg.get_body(("plain",)).get_content().split())  # type: ignore[union-attr]
    assert "Inbox" in text and "Projekte/Ältere" in text and '"Trash"' in text
    assert "At the current rate the mailbox is full in about" in text
    assert env.count(SENT, "80%") == 1 and env.count(FAILED, "80%") == 0
    assert (env.sink.mail_dir / "0001.eml").read_bytes() == mail.raw


def test_higher_threshold_reminder_all_clear_and_rearm(env: Env) -> None:
    fill(env.user, "INBOX", 8.3)
    env.cycle(T0)
    env.cycle(T0 + timedelta(hours=1))
    fill(env.user, "INBOX", 0.9, start=100)  # ~92%
    env.cycle(T0 + timedelta(hours=2))
    env.cycle(T0 + timedelta(days=3))
    env.cycle(T0 + timedelta(days=7, hours=2))  # reminder: 7 days after the 90% mail
    env.cycle(T0 + timedelta(days=8))
    env.user.dovecot.doveadm("expunge", "-u", env.user.name, "mailbox", "INBOX", "all")
    env.cycle(T0 + timedelta(days=9))  # 0%: all-clear, re-armed
    env.cycle(T0 + timedelta(days=9, hours=1))
    fill(env.user, "INBOX", 8.3, start=200)
    env.cycle(T0 + timedelta(days=10))  # crosses 80% again
    subjects = env.subjects()
    assert len(subjects) == 5, subjects
    assert "is 8" in subjects[0] and "is 9" in subjects[1]
    assert subjects[2].startswith("Reminder:")
    assert "has room again" in subjects[3]
    assert "is 8" in subjects[4]
    assert env.count(SENT, "80%") == 2 and env.count(SENT, "90%") == 2
    assert env.count(SENT, "all_clear") == 1


def test_smtp_down_then_up_delivers_exactly_one_mail_later(env: Env) -> None:
    fill(env.user, "INBOX", 8.5)
    env.sink.stop()
    env.cycle(T0)
    assert env.count(FAILED, "80%") == 1
    pending = env.warning_state().pending
    assert pending is not None and pending.attempts == 1 and "cannot connect" in pending.error
    env.cycle(T0 + timedelta(minutes=2))  # inside the back-off: no attempt
    assert env.count(FAILED, "80%") == 1
    env.cycle(T0 + timedelta(minutes=6))  # still down: second failure, longer back-off
    assert env.count(FAILED, "80%") == 2
    env.sink.start()
    env.cycle(T0 + timedelta(minutes=10))  # up, but the back-off (10 min) is not over
    assert env.sink.messages == []
    for minutes in (20, 35, 50):
        env.cycle(T0 + timedelta(minutes=minutes))
    assert len(env.sink.messages) == 1
    assert env.count(SENT, "80%") == 1 and env.count(FAILED, "80%") == 2
    assert env.warning_state().pending is None


def test_untrusted_certificate_is_not_sent_counted_and_retried(
    tmp_path: Path, user: SandboxUser, sink: SmtpSink
) -> None:
    env = Env(tmp_path / "bad", user, sink, ca_file=str(sink.other_ca_file))
    fill(user, "INBOX", 8.5)
    env.cycle(T0)
    assert env.sink.messages == [] and sink.auth_failures == 0
    assert env.count(FAILED, "80%") == 1
    state = env.warning_state()
    assert state.pending is not None and "certificate not trusted" in state.pending.error
    env.state.close()
    fixed = Env(tmp_path / "bad", user, sink)  # same state dir, the right CA
    fixed.cycle(T0 + timedelta(minutes=30))
    fixed.cycle(T0 + timedelta(minutes=45))
    assert len(sink.messages) == 1
    fixed.state.close()


def test_starttls_required_refuses_a_server_without_it(tmp_path: Path, user: SandboxUser) -> None:
    plain = SmtpSink(tmp_path / "plain", starttls=False).start()
    try:
        env = Env(tmp_path, user, plain, username=None, password_file=None)
        fill(user, "INBOX", 8.5)
        env.cycle(T0)
        assert plain.messages == []
        state = env.warning_state()
        assert state.pending is not None and "does not offer STARTTLS" in state.pending.error
        env.state.close()
    finally:
        plain.stop()


def test_passwords_never_appear_in_logs_or_mail(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fill(env.user, "INBOX", 8.5)
    env.sink.stop()
    env.cycle(T0)  # a failure path with error messages
    env.sink.start()
    env.cycle(T0 + timedelta(hours=1))
    wrong = secret_file(tmp_path / "other", "smtp", "wrong-password")
    bad = Env(tmp_path / "wrongpw", env.user, env.sink, password_file=str(wrong))
    bad.cycle(T0 + timedelta(hours=2))  # AUTH refused
    assert bad.warning_state().pending is not None
    bad.state.close()
    assert len(env.sink.messages) == 1
    for secret in (SMTP_PASSWORD, env.user.password, "wrong-password"):
        assert secret not in caplog.text
        assert secret.encode() not in env.sink.messages[0].raw
    assert "login failed: the server refused the credentials" in caplog.text


def test_cli_preview_prints_the_mail_without_sending(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quotawatch.cli import main

    fill(env.user, "Trash", 2.0)
    fill(env.user, "INBOX", 6.6, start=100)
    config = str(tmp_path / "quotawatch.yaml")
    assert main(["warn", "--preview", "--config", config, "--account", "alice"]) == 0
    out = capsys.readouterr().out
    assert "from the live check" in out and "would be sent now (crossed 80%)" in out
    assert "Subject: Your mailbox" in out and "Auto-Submitted: auto-generated" in out
    assert '"Trash"' in out and "[text/html alternative:" in out
    assert env.sink.messages == []
    assert main(["warn", "--preview", "--config", config, "--account", "alice"]) == 0
    assert "from the stored report" in capsys.readouterr().out
    assert env.sink.messages == []

    assert main(["warn", "--config", config, "--account", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "alice: sent warning 80%: crossed 80%"
    assert main(["warn", "--config", config, "--account", "alice"]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .startswith("alice: none: already warned at 80%; next reminder ")
    )
    assert len(env.sink.messages) == 1
    # after the warning, a preview shows no mail unless forced
    assert main(["warn", "--preview", "--config", config, "--account", "alice"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alice: no warning due (") and "above 80 %: already warned" in out
    assert "Subject:" not in out
    assert main(["warn", "--preview", "--force", "--config", config, "--account", "alice"]) == 0
    out = capsys.readouterr().out
    assert "showing the warning anyway (--force)" in out and "Subject: Your mailbox" in out
    assert len(env.sink.messages) == 1


def test_admin_digest_lists_full_accounts_once_per_interval(
    tmp_path: Path, user: SandboxUser, sink: SmtpSink
) -> None:
    digest = {"admin_digest": {"to": "postmaster@example.org", "every": "1d"}}
    env = Env(tmp_path, user, sink, warnings=digest)
    env.cycle(T0)  # empty mailbox: nothing to list, no digest
    fill(user, "INBOX", 9.2)
    env.cycle(T0 + timedelta(hours=1))  # warning; the digest is not due yet
    env.cycle(T0 + timedelta(days=1, hours=1))  # digest
    env.cycle(T0 + timedelta(days=1, hours=2))
    env.state.close()
    digests = [m for m in sink.messages if m.rcpt_tos == ("postmaster@example.org",)]
    assert len(digests) == 1 and len(sink.messages) == 2
    text = digests[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "alice" in text and "90 %" in text
