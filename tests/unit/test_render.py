"""Rendering of warning mails: both languages, folders and forecast, escaped HTML, no header injection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from quotawatch.config import Account, Config, parse_config
from quotawatch.model import FolderInfo
from quotawatch.retention.planner import Plan, PlannedAction
from quotawatch.warnings.mailer import build_message
from quotawatch.warnings.notify import compose, freeable
from quotawatch.warnings.render import Freeable, MailContent, Rendered, render, render_digest

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
MiB = 1024 * 1024
EVIL = "Projekte\r\nBcc: victim@example.net\r\n\r\n<script>alert(1)</script>"


def content(**kw: object) -> MailContent:
    data: dict[str, object] = {
        "kind": "warning",
        "account": "alice@example.org",
        "threshold": "80%",
        "ratio": 0.853,
        "used_bytes": int(8.53 * MiB),
        "limit_bytes": 10 * MiB,
        "folders": (
            FolderInfo("INBOX", 400, 4 * MiB),
            FolderInfo("Entwürfe/Ältere", 30, int(1.5 * MiB)),
            FolderInfo("Trash", 120, 2 * MiB, "\\Trash"),
            FolderInfo("Junk", 50, MiB, "\\Junk"),
        ),
        "freeable": (Freeable("trash-30d", ("Trash",), 80, int(1.2 * MiB)),),
        "freeable_total": int(1.2 * MiB),
        "days_until_full": 6.4,
        "remind_every": timedelta(days=7),
    }
    data.update(kw)
    return MailContent(**data)  # type: ignore[arg-type]


def parsed(msg: EmailMessage) -> EmailMessage:
    back = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(back, EmailMessage)
    return back


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", ["85.3 %", "8.5 MiB of 10.0 MiB", "Inbox", "Entwürfe/Ältere", "in about 6 days",
                "trash-30d", '"Trash"', "Empty", "1.2 MiB", "every 7 days"]),
        ("de", ["85,3 %", "8,5 MiB von 10,0 MiB", "Posteingang", "Entwürfe/Ältere",
                "in etwa 6 Tagen", "trash-30d", "„Trash“", "Leeren", "1,2 MiB", "alle 7 Tage"]),
    ],
)  # fmt: skip
def test_both_languages_contain_folders_forecast_and_advice(lang: str, expected: list[str]) -> None:
    r = render(content(), lang)
    unfolded = " ".join(r.text.split())
    for text in expected:
        assert text in unfolded, text
    assert "Trash" in unfolded and "Junk" in unfolded
    assert ("85" in r.subject) and ("alice@example.org" in r.subject)


def test_forecast_is_omitted_when_unknown() -> None:
    assert "rate" not in render(content(days_until_full=None), "en").text
    assert "Zunahme" not in render(content(days_until_full=None), "de").text
    assert "within a day" in render(content(days_until_full=0.4), "en").text


def test_message_count_quota_and_all_clear() -> None:
    r = render(content(messages=(9500, 10000), ratio=0.95), "en")
    assert "9,500 of at most 10,000 messages" in " ".join(r.text.split())
    clear = render(content(kind="all_clear", threshold="all_clear", ratio=0.6), "de")
    assert "wieder Platz" in clear.subject and "Ordner" not in clear.text


def test_html_part_escapes_everything() -> None:
    folders = (FolderInfo(EVIL, 3, 3 * MiB), FolderInfo("a & b <c>", 1, MiB))
    r = render(content(folders=folders), "en")
    assert "<script>" not in r.html
    assert "&lt;script&gt;" in r.html and "a &amp; b &lt;c&gt;" in r.html
    assert r.html.count("<table>") == 1


def test_folder_name_with_crlf_cannot_add_a_header() -> None:
    folders = (FolderInfo(EVIL, 3, 3 * MiB, "\\Trash"),)
    rendered = render(content(folders=folders), "en")
    subject = Rendered("Quota\r\nBcc: victim@example.net", rendered.text, rendered.html)
    msg = parsed(
        build_message(subject, "Mail <postmaster@example.org>", ["a@example.org"], [], NOW)
    )
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Quota Bcc: victim@example.net"
    assert sorted(k.lower() for k in msg) == sorted(
        ["subject", "from", "to", "date", "message-id", "auto-submitted", "precedence",
         "x-auto-response-suppress", "content-type", "mime-version"]
    )  # fmt: skip
    text = msg.get_body(("plain",))
    assert text is not None and "victim@example.net" in text.get_content()  # in the body only


def config_and_account(**acct: object) -> tuple[Config, Account]:
    data = {
        "smtp": {"host": "127.0.0.1", "port": 2525, "from": "Mail-Dienst Müller <qw@example.org>"},
        "warnings": {"language": "en", "cc_admin": "admin@example.org"},
        "accounts": [
            {"name": "alice", "host": "h", "username": "alice", "password_env": "X",
             "email": "alice@example.org", "warning_email": "alice@example.net", **acct}
        ],
    }  # fmt: skip
    config = parse_config(data)
    return config, config.accounts[0]


def test_compose_sets_headers_recipients_and_alternative() -> None:
    config, account = config_and_account(language="de")
    msg = parsed(compose(account, content(), config, NOW))
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Precedence"] == "bulk"
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.org", "alice@example.net"]
    assert msg["Cc"].addresses[0].addr_spec == "admin@example.org"
    assert msg["From"].addresses[0].display_name == "Mail-Dienst Müller"
    assert msg["Message-ID"].endswith("@example.org>")
    assert msg["Date"].datetime == NOW
    assert "voll" in msg["Subject"]  # the account's language override
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("html",)) is not None


def test_freeable_groups_actions_by_rule_and_skips_moves() -> None:
    actions = (
        PlannedAction("trash-30d", "Trash", "delete", (1, 2, 3), 7, 3000),
        PlannedAction("trash-30d", "Deleted", "delete", (4,), 8, 1000),
        PlannedAction("old", "INBOX", "move:Archive", (5, 6), 9, 5000),
        PlannedAction("big", "Sent", "archive", (7,), 10, 9000, "/srv/a"),
    )
    plan = Plan("alice", 0.9, 0.8, actions)
    assert freeable(plan) == (
        Freeable("trash-30d", ("Trash", "Deleted"), 4, 4000),
        Freeable("big", ("Sent",), 1, 9000),
    )
    assert freeable(Plan("alice", 0.9, 0.9, actions, error="UIDVALIDITY changed")) == ()
    assert freeable(None) == ()


def test_digest_lists_accounts() -> None:
    r = render_digest(
        [("alice", 0.91, 9 * MiB, 10 * MiB, "90%"), ("bob", 0.82, None, None, "80%")], "en"
    )
    assert "2 mailboxes" in r.subject
    assert "alice" in r.text and "91 %" in r.text and "bob" in r.text


def test_after_cleanup_corrects_usage_and_folders() -> None:
    from quotawatch.model import QuotaResource, Snapshot
    from quotawatch.retention.results import ActionResult, CleanupResult, after_cleanup

    snap = Snapshot(
        "alice", "imap", NOW,
        (QuotaResource("q", "STORAGE", 9 * MiB, 10 * MiB), QuotaResource("q", "MESSAGE", 900, 1000)),
        (FolderInfo("INBOX", 500, 5 * MiB), FolderInfo("Trash", 300, 3 * MiB),
         FolderInfo("Archive", 100, MiB)),
    )  # fmt: skip
    done = (
        ActionResult("trash-30d", "Trash", "delete", 200, 2 * MiB),
        ActionResult("old", "INBOX", "move:Archive", 50, MiB),
    )
    after = after_cleanup(snap, CleanupResult("alice", done, 2 * MiB + 100))
    assert [q.usage for q in after.quota] == [7 * MiB - 100, 700]
    sizes = {f.name: (f.messages, f.size_bytes) for f in after.folders}
    assert sizes == {"INBOX": (450, 4 * MiB), "Trash": (100, MiB), "Archive": (150, 2 * MiB)}
    assert after_cleanup(snap, None) is snap
    assert after_cleanup(snap, CleanupResult("alice", (), None)) is snap
