"""Pure parts of the POP3 client: UIDL identity, Date parsing, response codes, and POP3 config checks."""

from __future__ import annotations

import poplib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from quotawatch.config import parse_config
from quotawatch.errors import AuthError, ConfigError, ProtocolError, TemporaryServerError
from quotawatch.mail.pop3.wire import (
    build_index,
    capability_names,
    parse_date,
    parse_headers,
    server_error,
)

LIST = [b"1 100", b"2 200", b"3 300"]


def test_index_pairs_uidl_and_size() -> None:
    index = build_index([b"1 aaa", b"2 bbb", b"3 ccc"], LIST)
    assert index.problem is None
    assert dict(index.by_uidl) == {"aaa": (1, 100), "bbb": (2, 200), "ccc": (3, 300)}


def test_duplicate_uidls_make_the_mailbox_read_only() -> None:
    index = build_index([b"1 aaa", b"2 bbb", b"3 aaa"], LIST)
    assert index.by_uidl == {}
    assert index.problem == (
        "the server gives 1 UIDL(s) to more than one message (e.g. aaa); "
        "messages cannot be told apart"
    )


@pytest.mark.parametrize(
    ("uidl", "listing", "expected"),
    [
        ([b"1 aaa", b"2"], LIST[:2], "unparseable UIDL line"),
        ([b"1 aaa", b"4 ddd"], LIST, "message 4 is in UIDL but not in LIST"),
        ([b"1 aaa"], LIST, "UIDL lists 1 messages but LIST 3"),
        ([b"1 aaa"], [b"1 x"], "unparseable LIST line"),
    ],
)
def test_inconsistent_answers_are_read_only(
    uidl: list[bytes], listing: list[bytes], expected: str
) -> None:
    problem = build_index(uidl, listing).problem
    assert problem is not None and problem.startswith(expected)


def test_uidl_is_case_sensitive() -> None:
    index = build_index([b"1 AbC", b"2 abc"], LIST[:2])
    assert index.problem is None and set(index.by_uidl) == {"AbC", "abc"}


def test_parse_date() -> None:
    assert parse_date("Mon, 1 Jan 2024 10:00:00 +0200") == datetime(
        2024, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))
    )
    assert parse_date("Mon, 1 Jan 2024 10:00:00 -0000") == datetime(2024, 1, 1, 10, tzinfo=UTC)
    for bad in (None, "", "yesterday", "Mon, 99 Foo 2024 99:99:99 +0000"):
        assert parse_date(bad) is None, bad


def test_parse_headers_of_top() -> None:
    lines = [b"From: a@example.org", b"Message-ID:", b"  <folded@example.org>", b"Date: garbage"]
    assert parse_headers(lines) == ("<folded@example.org>", None)
    assert parse_headers([b"Subject: none"]) == (None, None)


def test_capability_names() -> None:
    caps = {"TOP": [], "UIDL": [], "SASL": ["PLAIN", "login"], "STLS": []}
    assert capability_names(caps) == {"TOP", "UIDL", "SASL", "STLS", "SASL=PLAIN", "SASL=LOGIN"}


@pytest.mark.parametrize(
    ("response", "login", "kind"),
    [
        (b"-ERR [IN-USE] Mailbox is locked", True, TemporaryServerError),
        (b"-ERR [LOGIN-DELAY] wait 15 minutes", True, TemporaryServerError),
        (b"-ERR [SYS/TEMP] try again", False, TemporaryServerError),
        (b"-ERR [AUTH] Authentication failed.", True, AuthError),
        (b"-ERR Authentication failed.", True, AuthError),
        (b"-ERR [SYS/PERM] broken", True, ProtocolError),
        (b"-ERR no such message", False, ProtocolError),
    ],
)
def test_response_codes(response: bytes, login: bool, kind: type[Exception]) -> None:
    exc = server_error("bob", "login", poplib.error_proto(response), login)
    assert type(exc) is kind
    assert str(exc).startswith("bob: ") and response.decode() in str(exc)


def test_temporary_errors_carry_the_backoff_reason() -> None:
    exc = server_error("bob", "login", poplib.error_proto(b"-ERR [IN-USE] locked"), True)
    assert exc.reason == "temporary"


# ----------------------------------------------------------------------------- config


def pop(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "bob",
        "protocol": "pop3",
        "host": "pop.example.org",
        "username": "bob",
        "password_env": "QW_BOB",
        "quota": "500MB",
    }
    data.update(kw)
    return data


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "qw.yaml")
    return info.value.lines()


def test_issue_example_config_is_valid() -> None:
    config = parse_config(
        {
            "accounts": [pop(rules=["pop-60d", "pop-make-room"])],
            "rules": {
                "pop-60d": {
                    "folders": ["INBOX"], "older_than": "60d", "age": "saved", "action": "archive",
                    "archive_dir": "/srv/pop-archive/{account}", "allow_inbox": True,
                },
                "pop-make-room": {
                    "when_above": "85%", "down_to": "70%", "folders": ["INBOX"], "order": "oldest",
                    "action": "delete", "allow_inbox": True,
                },
            },
        }
    )  # fmt: skip
    acct = config.accounts[0]
    assert acct.effective_port == 995 and acct.quota == 500_000_000
    assert config.rules["pop-60d"].keep_flagged is True, "the default is not an error for POP3"


def test_pop3_rule_problems_name_the_field() -> None:
    rule = {"folders": ["INBOX", "Archive"], "older_than": "30d", "allow_inbox": True}
    lines = problems(
        {
            "accounts": [pop(rules=["r"])],
            "rules": {"r": {**rule, "age": "received", "keep_flagged": True, "keep_unseen": True}},
        }
    )
    text = "\n".join(lines)
    assert "qw.yaml: rules.r.folders[1]: POP3 has only INBOX, not 'Archive'" in text
    assert "qw.yaml: rules.r.age: age: received has no meaning for POP3" in text
    assert "qw.yaml: rules.r.keep_flagged: POP3 has no flags" in text
    assert "qw.yaml: rules.r.keep_unseen: POP3 has no seen flag" in text
    assert all("(rule used by POP3 account at accounts[0])" in line for line in lines)


def test_pop3_move_is_refused() -> None:
    rule = {"folders": ["INBOX"], "older_than": "30d", "allow_inbox": True, "action": "move:Old"}
    (line,) = problems({"accounts": [pop(rules=["m"])], "rules": {"m": rule}})
    assert line.startswith("qw.yaml: rules.m.action: POP3 has no folders to move to")


def test_pop3_needs_a_quota_source() -> None:
    (line,) = problems({"accounts": [pop(quota=None)]})
    assert (
        line
        == "qw.yaml: accounts[0].quota: a POP3 account needs quota: SIZE or quota_from_imap: true"
    )
    (line,) = problems({"accounts": [pop(quota_from_imap=True)]})
    assert line == "qw.yaml: accounts[0]: set either quota or quota_from_imap: true, not both"


def test_imap_port_only_with_quota_from_imap() -> None:
    (line,) = problems({"accounts": [pop(imap_port=993)]})
    assert line == "qw.yaml: accounts[0]: imap_port is only used with quota_from_imap: true"
    (line,) = problems({"accounts": [pop(quota=None, quota_from_imap=True, imap_port=143)]})
    assert line.startswith("qw.yaml: accounts[0]: imap_port: tls: implicit on port 143")
    ok = parse_config({"accounts": [pop(quota=None, quota_from_imap=True, imap_port=1993)]})
    assert ok.accounts[0].imap_port == 1993


@pytest.mark.parametrize(
    ("field", "value"),
    [("quota", "1GB"), ("client_state_file", "/x"), ("imap_port", 993), ("min_on_server", "3d")],
)
def test_pop3_fields_refused_for_imap(field: str, value: Any) -> None:
    data = {**pop(protocol="imap", quota=None), field: value}
    (line,) = problems({"accounts": [data]})
    assert line == f"qw.yaml: accounts[0]: {field} is for POP3 accounts only"


def test_starttls_pop3_default_port() -> None:
    config = parse_config({"accounts": [pop(tls="starttls")]})
    assert config.accounts[0].effective_port == 110
