"""The ldap account source without a server: settings, {email} templates, entries, errors, config check."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotawatch.config import parse_config
from quotawatch.config.ldap import LdapSource, filter_problem
from quotawatch.config.sources import Listed, expand_source
from quotawatch.errors import AuthError, ConfigError, ConnectError, ProtocolError, ServerTimeout
from quotawatch.mail.ldap import failure, listed_users

LDAP: dict[str, Any] = {
    "url": "ldaps://ldap.example.org",
    "base": "ou=people,dc=example,dc=org",
    "bind_dn": "cn=quotawatch,dc=example,dc=org",
    "bind_password_env": "QW_LDAP",
}
TEMPLATE = {"host": "mail.example.org", "username": "{user}*admin", "password_env": "P"}


def source(**ldap: Any) -> dict[str, Any]:
    return {"ldap": {**LDAP, **ldap}, "template": dict(TEMPLATE)}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "ldaps://h", "starttls": True}, "starttls is for ldap://"),
        ({"url": "ldap://h", "starttls": False}, "allow_insecure_plaintext"),
        ({"url": "http://h"}, "ldaps://host"),
        ({"url": "ldaps://u:p@h"}, "must not carry credentials"),
        ({"url": "ldaps://h/dc=example?uid"}, "only scheme, host and port"),
        ({"url": "ldaps://h:99999"}, "invalid port"),
        ({"url": []}, "at least one"),
        ({"bind_dn": None}, "needs bind_dn"),
        ({"bind_password_env": None}, "exactly one of bind_password_file"),
        ({"bind_password_file": "/x"}, "exactly one of bind_password_file"),
        ({"filter": "objectClass=person"}, "enclosed in parentheses"),
        ({"filter": "(&(objectClass=person)(uid=a)"}, "unbalanced"),
        ({"filter": "(uid=a))(uid=b)"}, "unbalanced"),
        ({"username_attribute": "uid;binary"}, "not an attribute name"),
        ({"page_size": 0}, "greater than or equal to 1"),
        ({"scope": "subtree"}, "'sub', 'one' or 'base'"),
    ],
)
def test_ldap_settings_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LdapSource.model_validate({**LDAP, **settings})


def test_defaults_starttls_and_labels() -> None:
    one = LdapSource.model_validate({**LDAP, "url": "ldap://ldap.example.org"})
    assert one.uses_starttls(one.url[0]) and one.label == "ldap.example.org"
    assert (one.filter, one.scope, one.username_attribute, one.page_size) == (
        "(objectClass=inetOrgPerson)", "sub", "uid", 500,
    )  # fmt: skip
    two = LdapSource.model_validate({**LDAP, "url": ["ldaps://a:636", "ldap://b"]})
    assert two.label == "a:636 (+1)"
    assert not two.uses_starttls("ldaps://a:636") and two.uses_starttls("ldap://b")
    plain = LdapSource.model_validate(
        {**LDAP, "url": "ldap://h", "starttls": False, "allow_insecure_plaintext": True}
    )
    assert not plain.uses_starttls("ldap://h")
    anonymous = LdapSource.model_validate({"url": "ldaps://h", "base": "dc=x"})
    assert anonymous.bind_dn is None


def test_filters_checked_without_a_server() -> None:
    assert filter_problem("(&(objectClass=inetOrgPerson)(!(uid=a\\28b\\29)))") is None
    assert filter_problem("(|(mail=*@example.org)(uid=x*))") is None
    assert "empty item" in str(filter_problem("(&()(uid=a))"))
    assert "control" in str(filter_problem("(uid=a\nb)"))


def test_email_placeholder_only_where_a_source_gives_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"account_sources": [
            {"usernames_file": "u.txt", "template": {**TEMPLATE, "email": "{email}"}},
            {**source(), "template": {**TEMPLATE, "warning_email": "{email}"}},
            {"ldap": {**LDAP, "email_attribute": "mail"},
             "template": {**TEMPLATE, "email": "{email}", "username": "{email}"}},
        ]})  # fmt: skip
    lines = info.value.lines()
    assert len(lines) == 2 and "account_sources[0]" in lines[0] and "[1]" in lines[1]
    assert all("only an ldap source with email_attribute" in line for line in lines)


def test_ldap_users_fill_user_and_email(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({"account_sources": [source(email_attribute="mail")]})
    entries = [
        Listed("alice", "alice@example.org"),
        Listed("bob"),  # no mail: an account without email
        Listed("carol", "not an address"),  # ignored with a warning
        "dave",
        Listed("e ve", "eve@example.org"),  # not a username: skipped
        Listed("o'brien", "ob@example.org"),  # not an account name: skipped, not fatal
    ]
    with caplog.at_level(logging.WARNING):
        accounts = expand_source(config.account_sources[0], "account_sources[0]", users=entries)
    assert [(a.name, a.username, a.email) for a in accounts] == [
        ("alice", "alice*admin", "alice@example.org"),
        ("bob", "bob*admin", None),
        ("carol", "carol*admin", None),
        ("dave", "dave*admin", None),
    ]
    assert "'not an address' is not an email address" in caplog.text
    assert "skipping user 'e ve'" in caplog.text and 'skipping user "o\'brien"' in caplog.text

    by_mail = parse_config({"account_sources": [{
        "ldap": {**LDAP, "email_attribute": "mail"},
        "template": {**TEMPLATE, "name": "{user}", "username": "{email}",
                     "email": "{user}@example.org"},
    }]})  # fmt: skip
    accounts = expand_source(by_mail.account_sources[0], "s", users=[
        Listed("alice", "a.smith@example.org"), Listed("bob")
    ])  # fmt: skip
    assert [(a.username, a.email) for a in accounts] == [
        ("a.smith@example.org", "alice@example.org")
    ], "bob has no address, which his username needs: skipped"


def test_entries_become_users_in_order() -> None:
    entries: list[Any] = [
        ("uid=a,dc=x", {"UID": [b"alice", b"alias"], "mail": [b"alice@example.org"]}),
        (None, ["ldap://elsewhere/dc=y"]),  # a search reference
        ("uid=b,dc=x", {"uid": [b"bob"]}),
        ("cn=no uid,dc=x", {"mail": [b"x@example.org"]}),
        ("uid=a2,dc=x", {"uid": [b"alice"]}),  # listed twice
        ("uid=bad,dc=x", {"uid": [b"\xff\xfe"]}),  # not UTF-8
        ("uid=sp,dc=x", {"uid": [b"with space"]}),
        ("uid=u,dc=x", {"uid": ["jürgen".encode()], "Mail": [b"j@example.org"]}),
    ]
    assert listed_users(entries, "uid", "mail", "src") == [
        Listed("alice", "alice@example.org"),
        Listed("bob", None),
        Listed("jürgen", "j@example.org"),
    ]
    assert [e.email for e in listed_users(entries, "uid", None, "src")] == [None] * 3


def test_python_ldap_errors_become_reasons_without_the_password() -> None:
    ldap = pytest.importorskip("ldap")
    secret = "S3cret-bind-pw"
    cases = [
        (ldap.INVALID_CREDENTIALS({"desc": "Invalid credentials"}), AuthError, "bind was refused"),
        (ldap.SERVER_DOWN({"desc": "Can't contact LDAP server"}), ConnectError, "cannot reach"),
        (ldap.TIMEOUT({"desc": "Timed out"}), ServerTimeout, "no answer in time"),
        (ldap.SIZELIMIT_EXCEEDED({"desc": "Size limit exceeded"}), ProtocolError, "partial"),
        (
            ldap.ADMINLIMIT_EXCEEDED(
                {"desc": "Administrative limit exceeded", "info": "illegal pagedResults page size"}
            ),
            ProtocolError,
            "lower page_size",
        ),
        (ldap.NO_SUCH_OBJECT({"desc": "No such object"}), ProtocolError, "base does not exist"),
        (ldap.OTHER({"desc": "Other", "info": f"echo {secret}"}), ProtocolError, "echo ***"),
    ]
    for exc, kind, words in cases:
        error = failure(exc, "ldap h", secret)
        assert isinstance(error, kind) and words in str(error), (exc, error)
        assert secret not in str(error)


def write(tmp_path: Path, ldap: dict[str, Any]) -> Path:
    path = tmp_path / "qw.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "account_sources": [{"ldap": ldap, "template": TEMPLATE}]}))  # fmt: skip
    return path


def test_config_check_names_field_and_file_without_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quotawatch.cli import main

    secret = tmp_path / "ldap.pw"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    ldap = {**LDAP, "url": "ldaps://ldap.invalid", "bind_password_env": None,
            "bind_password_file": "ldap.pw", "ca_file": "missing-ca.pem"}  # fmt: skip
    assert main(["config", "check", str(write(tmp_path, ldap))]) == 2
    err = capsys.readouterr().err
    assert f"account_sources[0].ldap.bind_password_file: bind_password_file {secret}: " in err
    assert "readable or writable by group or others" in err
    assert f"account_sources[0].ldap.ca_file: cannot read {tmp_path / 'missing-ca.pem'}" in err

    secret.chmod(0o600)
    del ldap["ca_file"]
    assert main(["config", "check", str(write(tmp_path, ldap))]) == 0  # nothing contacted
    assert "OK (0 accounts" in capsys.readouterr().out

    for bad, words in (
        ({"filter": "uid=x"}, "ldap.filter: filter must be enclosed in parentheses"),
        ({"url": "ldap://h", "starttls": False}, "ldap: starttls: false sends the user list"),
    ):
        assert main(["config", "check", str(write(tmp_path, {**ldap, **bad}))]) == 2
        assert f"account_sources[0].{words}" in capsys.readouterr().err


def test_without_python_ldap_one_line_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from quotawatch.cli import main

    monkeypatch.setitem(sys.modules, "ldap", None)  # what an install without the extra looks like
    monkeypatch.setenv("QW_LDAP", "pw")
    path = write(tmp_path, {**LDAP, "url": "ldaps://ldap.invalid"})
    line = ("account_sources with ldap needs the Python package python-ldap: "
            "pip install 'quotawatch[ldap]' (or pipx inject quotawatch python-ldap)")  # fmt: skip
    assert main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == line
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"{path}: account_sources[0].ldap: {line}"
