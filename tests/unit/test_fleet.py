"""Large installations: doveadm settings, its quota rows, and when an account needs an IMAP login."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.config import Account, parse_config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import (
    EXPLICIT_SOURCE,
    AccountTable,
    account_table,
    all_accounts,
    grouped_accounts,
)
from quotawatch.errors import ConfigError, ProtocolError
from quotawatch.mail.doveadm import QuotaRows, _payload, parse_quota_rows
from quotawatch.model import QuotaResource
from quotawatch.service.daemon import Runtime
from quotawatch.service.fleet import doveadm_user, needs_imap

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
API = {"url": "https://mail.example.org:8080/doveadm/v1", "api_key_file": "/etc/qw/doveadm"}


def account(**extra: object) -> Account:
    return Account.model_validate({
        "name": "alice", "host": "mail.example.org", "username": "alice*admin",
        "password_env": "X", "quota_source": "doveadm", "doveadm": API, **extra,
    })  # fmt: skip


def test_quota_rows_kib_become_bytes_and_dash_no_limit() -> None:
    rows = [
        {"username": "a", "root": "User quota", "type": "STORAGE", "value": "10", "limit": "20"},
        {"username": "a", "root": "User quota", "type": "MESSAGE", "value": "3", "limit": "-"},
        {"username": "b", "root": "User quota", "type": "STORAGE", "value": "0", "limit": "-"},
    ]
    got = parse_quota_rows(rows)
    assert got["a"] == (
        QuotaResource("User quota", "STORAGE", 10 * 1024, 20 * 1024),
        QuotaResource("User quota", "MESSAGE", 3, 0),
    )
    assert got["b"] == (QuotaResource("User quota", "STORAGE", 0, 0),)
    with pytest.raises(ProtocolError):
        parse_quota_rows([{"username": "a", "type": "STORAGE"}])
    # decoded as json meets them: the same quotas, one string per root and type
    answer = json.dumps([["doveadmResponse", rows, "qw"]]).encode()
    collected = QuotaRows()
    assert _payload(answer, "quotaGet", "doveadm", collected) == [None, None, None]
    quotas = collected.quotas()
    assert quotas == got and quotas["a"][0].root is quotas["b"][0].root
    with pytest.raises(ProtocolError, match="lacks username"):
        _payload(json.dumps([["doveadmResponse", [{"username": "a"}], "qw"]]).encode(),
                 "quotaGet", "doveadm", QuotaRows())  # fmt: skip
    error = [["error", {"type": "exitCode", "exitCode": 68}, "qw"]]
    with pytest.raises(ProtocolError, match="exit code 68"):
        _payload(json.dumps(error).encode(), "quotaGet", "doveadm", QuotaRows())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "exactly one of url"),
        ({**API, "command": ["doveadm"]}, "exactly one of url"),
        ({"url": API["url"]}, "exactly one of api_key_file"),
        ({**API, "url": "http://mail:8080/doveadm/v1"}, "unencrypted"),
        ({**API, "url": "https://u:p@mail/doveadm/v1"}, "must not carry credentials"),
        ({"command": ["doveadm"], "api_key_env": "K"}, "for url, not for command"),
    ],
)
def test_doveadm_settings_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DoveadmAccess.model_validate(settings)


def test_plain_http_only_when_allowed_and_label() -> None:
    ok = DoveadmAccess.model_validate(
        {**API, "url": "http://mail:8080/doveadm/v1", "allow_insecure_plaintext": True}
    )
    assert ok.label == "mail:8080"
    assert DoveadmAccess(command=("doveadm",)).label == "local"


def test_source_kinds_and_quota_source_checked_with_paths() -> None:
    template = {"host": "h", "username": "{user}", "password_env": "P"}
    with pytest.raises(ConfigError) as info:
        parse_config({"account_sources": [
            {"template": template},
            {"usernames_file": "u.txt", "doveadm": API, "template": template},
            {"usernames_file": "u.txt", "template": {**template, "quota_source": "doveadm"}},
        ]})  # fmt: skip
    text = str(info.value)
    assert "account_sources[0]: Value error" not in text
    assert text.count("exactly one of usernames_file, doveadm or ldap") == 2
    assert "needs doveadm" in text
    with pytest.raises(ValueError, match="needs doveadm"):
        Account.model_validate({"name": "a", "host": "h", "username": "a", "password_env": "P",
                                "quota_source": "doveadm"})  # fmt: skip
    with pytest.raises(ValueError, match="for IMAP accounts"):
        account(protocol="pop3", quota="1GB")


def test_doveadm_user_of_an_account() -> None:
    assert doveadm_user(account()) == "alice"
    assert doveadm_user(account(username="admin", authorize_as="bob")) == "bob"
    assert doveadm_user(account(username="carol@example.org")) == "carol@example.org"


def test_needs_imap_above_the_level_or_when_folders_are_old() -> None:
    acct = account(imap_when_above="70%", folders_every="1d")
    fresh = (NOW - timedelta(hours=2)).timestamp()
    old = (NOW - timedelta(days=1, seconds=1)).timestamp()
    assert not needs_imap(acct, 0.5, fresh, NOW)
    assert not needs_imap(acct, None, fresh, NOW)  # no limit, folders fresh
    assert needs_imap(acct, 0.7, fresh, NOW)
    assert needs_imap(acct, 0.95, fresh, NOW)
    assert needs_imap(acct, 0.1, old, NOW)
    assert needs_imap(acct, 0.1, None, NOW)  # folders never read, no first doveadm check known


def test_first_folder_reads_are_spread_over_folders_every() -> None:
    accounts = [account(name=f"user{i}") for i in range(400)]
    since = NOW.timestamp()
    due = [
        sum(needs_imap(a, 0.1, None, NOW + timedelta(hours=h), since) for a in accounts)
        for h in (0, 6, 12, 24)
    ]
    assert due[0] == 0 and due[-1] == 400
    assert 50 < due[1] < 150 and 150 < due[2] < 250  # about a quarter, about a half
    assert all(needs_imap(a, 0.75, None, NOW, since) for a in accounts)  # above the level: now


def test_accounts_grouped_by_source_with_explicit_ones_under_accounts(tmp_path: Path) -> None:
    (tmp_path / "staff.txt").write_text("carol\ndave\n")
    (tmp_path / "guests.txt").write_text("erin\n")
    template = {"username": "{user}*admin", "password_env": "P"}
    config = parse_config({
        "accounts": [{"name": "alice", "host": "imap1", "username": "alice", "password_env": "P"}],
        "account_sources": [
            {"name": "staff", "usernames_file": "staff.txt", "template": {**template, "host": "imap2"}},
            {"usernames_file": "guests.txt", "template": {**template, "host": "imap1"}},
        ],
    })  # fmt: skip
    path = str(tmp_path / "quotawatch.yaml")
    grouped = grouped_accounts(config, path)
    assert [(label, [a.name for a in group]) for label, group in grouped] == [
        (EXPLICIT_SOURCE, ["alice"]), ("staff", ["carol", "dave"]), ("sources[1]", ["erin"]),
    ]  # fmt: skip
    assert EXPLICIT_SOURCE == "accounts"
    assert [a.name for a in all_accounts(config, path)] == ["alice", "carol", "dave", "erin"]
    table = account_table(config, path)
    runtime = Runtime.of_table(config, table, SecretCache())
    assert list(runtime.groups()) == [
        ("alice", "accounts", "imap1"), ("carol", "staff", "imap2"), ("dave", "staff", "imap2"),
        ("erin", "sources[1]", "imap1"),
    ]  # fmt: skip
    assert table.spans == [(EXPLICIT_SOURCE, 1), ("staff", 2), ("sources[1]", 1)]


def test_a_source_named_like_the_explicit_accounts_still_loads() -> None:
    """A config that loaded before the source/host series keeps loading: a source named
    ``accounts`` beside explicit accounts shares their ``source`` label (README says so)."""
    template = {"host": "h", "username": "{user}", "password_env": "P"}
    data: dict[str, Any] = {
        "account_sources": [{"name": "accounts", "usernames_file": "u.txt", "template": template}],
        "accounts": [{"name": "alice", "host": "h", "username": "alice", "password_env": "P"}],
    }
    config = parse_config(data)
    assert config.account_sources[0].label(0) == EXPLICIT_SOURCE


def test_the_account_table_keeps_source_accounts_compact_and_equal() -> None:
    """An account of a source is kept as the values its template fills in; a lookup gives the
    Account validated from the list (same fields, same keys set), one that differs otherwise is
    kept whole, and two tables compare account by account."""
    template = {"host": "h", "username": "{user}*admin", "password_env": "P",
                "email": "{user}@example.org"}  # fmt: skip
    config = parse_config({
        "accounts": [{"name": "boss", "host": "h", "username": "boss", "password_env": "P"}],
        "account_sources": [{"usernames_file": "u.txt", "template": template}],
    })  # fmt: skip
    users = ["alice", "bob", "carol"]
    table = account_table(config, "<config>", {0: users})
    assert list(table) == ["boss", *users] and len(table) == 4 and "bob" in table
    assert all_accounts(config, "<config>", {0: users}) == list(table.values())
    for user in users:
        validated = Account.model_validate({"name": user, "host": "h",
                                            "username": f"{user}*admin",
                                            "password_env": "P",
                                            "email": f"{user}@example.org"})  # fmt: skip
        assert table[user] == validated
        assert table[user].model_fields_set == validated.model_fields_set
        assert table[user].model_dump_json() == validated.model_dump_json()
        assert isinstance(table._rows[user], tuple)  # compact
    assert table["boss"] is config.accounts[0]

    odd = AccountTable()
    group = odd.group(["name", "username"])
    first = account(name="a", username="a")
    other_host = account(name="b", username="b", host="elsewhere")
    assert odd.add(first, group) and odd.add(other_host, group)
    assert not odd.add(account(name="a", username="x"), group), "a name is taken once"
    assert odd._rows["b"] is other_host and odd["b"] == other_host and odd["a"] == first

    changed = account_table(config, "<config>", {0: ["alice", "bob", "dave"]})
    assert table.same("alice", changed) and changed.same("boss", table)
    renamed = parse_config({"account_sources": [
        {"usernames_file": "u.txt", "template": {**template, "host": "h2"}}]})  # fmt: skip
    assert not account_table(renamed, "<config>", {0: users}).same("bob", table)
    with pytest.raises(ConfigError, match="'alice' appears twice"):
        account_table(config, "<config>", {0: ["alice", "alice"]})
