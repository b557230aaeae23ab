"""Pure parts of the first hour: mailbox URLs, why a rule selected nothing, why no warning is due,
one way to show percentages, escaped server names, paths relative to the config file."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from quotawatch.config import Rule, Warnings, load_config
from quotawatch.config.url import parse_mailbox_url
from quotawatch.logs import OneLineFormatter
from quotawatch.mail.session import Candidate, FolderSelection
from quotawatch.model import AccountReport, FolderInfo, QuotaResource, Snapshot
from quotawatch.output import render_check, render_plans
from quotawatch.retention.caps import Limits
from quotawatch.retention.planner import Plan, PlannedAction, RuleSelection, plan
from quotawatch.text import escape
from quotawatch.units import format_percent
from quotawatch.warnings.decision import Usage, WarningState, decide, why_not_due
from quotawatch.warnings.render import render
from tests.unit.test_render import content

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("imaps://me@mail.example.org", {"protocol": "imap", "tls": "implicit", "username": "me"}),
        ("imap://me@mail.example.org", {"protocol": "imap", "tls": "starttls"}),
        ("imap://me@mail.example.org;starttls", {"protocol": "imap", "tls": "starttls"}),
        ("pop3s://bob@pop.example.org:1995", {"protocol": "pop3", "tls": "implicit", "port": 1995}),
        ("pop3://bob@pop.example.org", {"protocol": "pop3", "tls": "starttls"}),
        ("imaps://me%40example.org@mail.example.org", {"username": "me@example.org"}),
    ],
)
def test_mailbox_urls(url: str, fields: dict[str, object]) -> None:
    got = parse_mailbox_url(url)
    assert got.items() >= fields.items(), got
    assert "password" not in str(got)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("imaps://me:hunter2@h.example.org", "do not put the password in the URL"),
        ("imaps://me@h.example.org/INBOX", "only imaps://USER@HOST[:PORT]"),
        ("imaps://me@h.example.org;starttls", ";starttls goes with imap:// or pop3://"),
        ("ftp://me@h.example.org", "unknown scheme ftp://"),
        ("imaps://@h.example.org", "no user name"),
        ("imaps://me%0d%0a@h.example.org", "control character"),
    ],
)
def test_bad_mailbox_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_mailbox_url(url)
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


def snapshot(total: int) -> Snapshot:
    quota = (QuotaResource("", "STORAGE", 50, 100),)
    return Snapshot("alice", "imap", NOW, quota, (FolderInfo("Trash", total, 0, "\\Trash"),))


def notes(
    rule: Rule, fs: FolderSelection, *earlier: tuple[str, Rule, FolderSelection]
) -> list[str]:
    sels = [RuleSelection(n, (f,)) for n, _, f in earlier] + [RuleSelection("r", (fs,))]
    rules = {n: r for n, r, _ in earlier} | {"r": rule}
    p = plan(snapshot(fs.total_messages), sels, rules, Limits(1.0, 10_000), NOW)
    return [n for n in p.notes if n.startswith("rule r:")]


def test_plan_says_why_a_rule_selected_nothing() -> None:
    trash = Rule(folders=["\\Trash"], older_than="30d")  # type: ignore[arg-type]
    nothing = FolderSelection("Trash", 7, 12, ())
    assert notes(trash, nothing) == ["rule r: Trash: 12 messages, none in this folder for 30 days"]
    young = FolderSelection("Trash", 7, 3, (Candidate(1, 10, NOW - timedelta(days=2)),))
    received = Rule(folders=["\\Trash"], older_than="2w", age="received", larger_than="1MiB")  # type: ignore[arg-type]
    assert notes(received, young) == [
        "rule r: Trash: 3 messages, none received more than 14 days ago and larger than 1.0 MiB"
    ]
    protected = FolderSelection("INBOX", 7, 40, (), notes=("INBOX: 40 candidates, all unseen",))
    assert notes(trash, protected) == ["rule r: INBOX: 40 candidates, all unseen"]
    old = FolderSelection("Trash", 7, 5, (Candidate(1, 10, NOW - timedelta(days=90)),))
    assert notes(trash, old, ("first", trash, old)) == [
        "rule r: Trash: 1 candidate, all planned by an earlier rule"
    ]
    assert notes(trash, old) == []  # a rule that acts needs no explanation


def test_preview_says_why_no_warning_is_due() -> None:
    policy = Warnings(thresholds=["80%", "90%"])  # type: ignore[list-item]
    low = Usage(0.7996, 7996, 10000)
    decision = decide(low, WarningState(), policy, NOW)
    assert decision.kind is None
    assert why_not_due(low, policy, decision) == "no warning due (79.9 %, below 80 %)"
    high = Usage(0.85, 85, 100)
    first = decide(high, WarningState(), policy, NOW)
    later = decide(high, first.state, policy, NOW + timedelta(days=1))
    assert why_not_due(high, policy, later) == (
        "no warning due (85 %, above 80 %: already warned at 80%; next reminder 2024-06-08 12:00 UTC)"
    )
    free_only = Warnings(thresholds=["50MB free"], rearm_below="10%")  # type: ignore[list-item,arg-type]
    small = Usage(0.1, 10_000_000, 100_000_000)
    assert why_not_due(small, free_only, decide(small, WarningState(), free_only, NOW)) == (
        "no warning due (10 %, 85.8 MiB free, more than 50MB free)"
    )


def test_percentages_look_alike_in_tables_and_mails() -> None:
    assert format_percent(0.7999) == "79.9 %"  # rounded down: never shows a threshold reached
    assert format_percent(0.8) == "80 %" and format_percent(1) == "100 %"
    assert format_percent(None) == "-"
    mail = render(content(ratio=0.7999, threshold="80%"), "en")
    assert mail.subject == "Your mailbox alice@example.org is 79.9 % full"
    assert "passed 80 %" in " ".join(mail.text.split())
    assert render(content(ratio=0.7999), "de").subject.endswith("zu 79,9 % voll")


def test_names_from_servers_are_escaped_in_tables_and_logs() -> None:
    assert escape("Trash\r\nINFO forged") == "Trash\\r\\nINFO forged"
    assert escape("a\x1b[31mb\x00\u2028") == "a\\x1b[31mb\\0\\u2028"
    assert escape("Entwürfe/Ältere") == "Entwürfe/Ältere"
    record = logging.LogRecord("x", logging.INFO, "f", 1, "folder %s", ("A\r\nB",), None)
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO folder A\\r\\nB" and record.getMessage() == "folder A\r\nB"


def test_check_and_plan_tables_escape_names_from_servers() -> None:
    """A folder name, note or error a server sends can't forge lines or colours in the output."""
    evil = "Trash\r\nalice  ok  0 B\x1b[31m\x00"
    snap = Snapshot(
        account="alice",
        protocol="imap",
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        quota=(QuotaResource("User quota", "STORAGE", 10, 100),),
        folders=(FolderInfo(evil, 3, 10),),
    )
    failed = AccountReport("bob", "imap", error="NO [ALERT] line one\r\nforged: ok", reason="auth")
    check = render_check([AccountReport("alice", "imap", snapshot=snap), failed])
    action = PlannedAction("trash", evil, "delete", (1, 2), 7, 10)
    plan = Plan("alice", 0.1, 0.0, (action,), notes=(f"{evil}: 3 messages",))
    shown = render_plans([(plan, None), (Plan("bob", None, None, (), error=evil), None)])
    for out in (check, shown):
        assert "\r" not in out and "\x1b" not in out and "\x00" not in out
        assert not any(line.startswith(("alice  ok", "forged")) for line in out.splitlines())
    assert "Trash\\r\\nalice  ok  0 B\\x1b[31m\\0" in check
    assert "forged: ok" in check and "\\r\\nforged" in check
    assert shown.count("Trash\\r\\n") == 3  # the action's folder, the note, the error


def test_password_env_is_called_the_weakest_where_it_is_described() -> None:
    from quotawatch.config import Account, Smtp

    for model in (Account, Smtp):
        text = model.model_fields["password_env"].description or ""
        assert "/proc/PID/environ" in text and "password_credential" in text, model
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    security = readme[readme.index("## Security") :]
    assert "`password_env` is the weakest" in " ".join(security.split())
    assert "/proc/PID/environ" in security and "password_credential" in security


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "quotawatch.yaml"
    path.parent.mkdir()
    account = {"name": "a", "host": "h.example.org", "username": "a", "password_file": "a.pw",
               "ca_file": "../ca.pem"}  # fmt: skip
    path.write_text(yaml.safe_dump({"state_dir": "state", "accounts": [account]}))
    config = load_config(path)
    assert config.state_dir == tmp_path / "conf" / "state"
    assert config.accounts[0].password_file == tmp_path / "conf" / "a.pw"
    assert config.accounts[0].ca_file == tmp_path / "conf" / ".." / "ca.pem"
