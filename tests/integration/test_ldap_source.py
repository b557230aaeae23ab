"""The ldap account source against a real OpenLDAP slapd (sandbox/slapd.py) and the sandbox Dovecot.

Listing, template substitution with {email}, paging past the server's size limit, StartTLS and
ldaps:// verified (no fallback to plaintext), a refused bind, a directory that goes away, and the
bind password kept out of every log line, error and output.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from quotawatch.config import Config, parse_config
from quotawatch.config.ldap import LdapSource
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import Listed
from quotawatch.errors import ConnectError, ProtocolError, TLSError
from quotawatch.service.daemon import Daemon
from quotawatch.service.directory import Directory, open_ldap
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from sandbox.slapd import Slapd
from tests.integration.conftest import serve_slapd
from tests.support import secret_file

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"


def people(slapd: Slapd, dovecot: Dovecot, count: int, prefix: str | None = None) -> list[str]:
    """``count`` new LDAP users (uid PREFIX-N, mail uid@example.org); returns their uids."""
    prefix = prefix or f"l{secrets.token_hex(3)}"
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    slapd.add_users((n, f"{n}@example.org") for n in names)
    return names


def settings(slapd: Slapd, dovecot: Dovecot, password_file: Path, **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "url": slapd.url, "ca_file": str(dovecot.ca_file), "bind_dn": slapd.reader_dn,
        "bind_password_file": str(password_file), "base": slapd.people,
        "username_attribute": "uid", "email_attribute": "mail", "timeout": 10,
    }  # fmt: skip
    block.update(extra)
    return block


def only(prefix: str) -> str:
    return f"(&(objectClass=inetOrgPerson)(uid={prefix}-*))"


def reader_file(slapd: Slapd, tmp_path: Path) -> Path:
    return secret_file(tmp_path / "secrets", "ldap", slapd.reader_password)


def client(block: dict[str, Any]) -> Any:
    return open_ldap(LdapSource.model_validate(block), SecretCache())


def bind_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " BIND dn=" in line]


# ---------------------------------------------------------------------- end to end
def test_check_lists_ldap_users_and_logs_in_to_each(
    slapd: Slapd, dovecot: Dovecot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = people(slapd, dovecot, 3)
    for name in names:
        dovecot.add_user(name, secrets.token_urlsafe(8), quota_bytes=10 * 1024 * 1024)
    master = secret_file(tmp_path / "secrets", "master", dovecot.master_password)
    source = {
        "name": "directory",
        "ldap": settings(slapd, dovecot, reader_file(slapd, tmp_path),
                         filter=only(names[0].rsplit("-", 1)[0])),
        "template": {"host": dovecot.host, "port": dovecot.imaps_port,
                     "ca_file": str(dovecot.ca_file), "username": f"{{user}}*{dovecot.master_user}",
                     "password_file": str(master)},
    }  # fmt: skip
    config = tmp_path / "quotawatch.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                      "account_sources": [source]}))  # fmt: skip
    from quotawatch.cli import main

    assert main(["check", "--json", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {a["name"]: a for a in out["accounts"]}
    assert sorted(by_name) == names
    for name in names:
        assert by_name[name]["ok"], by_name[name]
        assert by_name[name]["quota"][0]["limit"] == 10 * 1024 * 1024
        assert by_name[name]["origin"]["quota"] == "imap"  # a real master-user login each
    assert main(["check", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in names)
    print("\n" + table)  # the report quotes this excerpt

    accounts = Directory().accounts(parse_config(yaml.safe_load(config.read_text())),
                                    str(config), SecretCache(), force=True)  # fmt: skip
    assert [(a.name, a.username, a.email) for a in accounts] == [
        (n, f"{n}*{dovecot.master_user}", f"{n}@example.org") for n in names
    ], "{user} from uid, the account's email from mail"
    assert slapd.reader_password not in table


def test_paging_reads_past_the_size_limit_and_a_cut_list_is_an_error(
    slapd: Slapd, dovecot: Dovecot, tmp_path: Path
) -> None:
    names = people(slapd, dovecot, 120)
    prefix = names[0].rsplit("-", 1)[0]
    # the premise: the server stops an unpaged search after 50 entries
    unpaged = subprocess.run(
        ["ldapsearch", "-x", "-H", slapd.url, "-D", slapd.reader_dn, "-w", slapd.reader_password,
         "-b", slapd.people, only(prefix), "uid"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "LDAPNOINIT": "1"},
    )  # fmt: skip
    assert unpaged.returncode == 4, unpaged.stdout[-300:]  # sizeLimitExceeded

    password = reader_file(slapd, tmp_path)
    listed = client(settings(slapd, dovecot, password, filter=only(prefix))).users()  # page 500
    assert [e.user for e in listed] == names
    assert listed[7] == Listed(names[7], f"{names[7]}@example.org")

    before = len(slapd.log_text())
    small = client(settings(slapd, dovecot, password, filter=only(prefix), page_size=40)).users()
    assert [e.user for e in small] == names
    pages = [ln for ln in slapd.log_text()[before:].splitlines() if "SEARCH RESULT" in ln]
    assert len(pages) == 3, pages  # 40 + 40 + 40, each a request of its own

    capped = settings(slapd, dovecot, password, filter=only(prefix), bind_dn=slapd.capped_dn)
    with pytest.raises(ProtocolError, match="size limit cut the list"):
        client(capped).users()


# ---------------------------------------------------------------------- TLS
def test_starttls_with_the_wrong_ca_fails_and_never_binds_in_plaintext(
    slapd: Slapd, dovecot: Dovecot, tmp_path: Path
) -> None:
    password = reader_file(slapd, tmp_path)
    before = len(slapd.log_text())
    wrong = settings(slapd, dovecot, password, ca_file=str(dovecot.other_ca_file))
    with pytest.raises(TLSError) as caught:
        client(wrong).users()
    assert caught.value.reason == "tls"
    assert "StartTLS failed" in str(caught.value) and "not continuing without TLS" in str(
        caught.value
    )
    log = slapd.log_text()[before:]
    assert STARTTLS_OID in log, "StartTLS was asked for"
    assert bind_lines(log) == [], "no bind after a failed StartTLS: no fallback to plaintext"

    people(slapd, dovecot, 1)
    before = len(slapd.log_text())
    assert client(settings(slapd, dovecot, password)).users()
    binds = [b for b in bind_lines(slapd.log_text()[before:]) if "mech=SIMPLE" in b]
    assert binds and all(" ssf=256" in b for b in binds), binds  # the bind went over TLS


def test_ldaps_is_verified_and_the_host_name_checked(
    slapd: Slapd, dovecot: Dovecot, tmp_path: Path
) -> None:
    password = reader_file(slapd, tmp_path)
    prefix = people(slapd, dovecot, 2)[0].rsplit("-", 1)[0]
    good = settings(slapd, dovecot, password, url=slapd.ldaps_url, filter=only(prefix))
    assert len(client(good).users()) == 2
    for url, ca, words in (
        (slapd.ldaps_url, dovecot.other_ca_file, "certificate not trusted"),
        (slapd.mismatch_url, dovecot.ca_file, "mismatch"),
        (slapd.mismatch_starttls_url, dovecot.ca_file, "StartTLS failed"),  # the name checked too
    ):
        before = len(slapd.log_text())
        with pytest.raises(TLSError, match=words) as caught:
            client({**good, "url": url, "ca_file": str(ca)}).users()
        assert caught.value.reason == "tls"
        assert bind_lines(slapd.log_text()[before:]) == []
    # failover: a closed port first, then the server
    closed = f"ldaps://127.0.0.1:{slapd.ldaps_port + 1 if slapd.ldaps_port < 65535 else 1}"
    assert len(client({**good, "url": [closed, slapd.ldaps_url]}).users()) == 2
    with pytest.raises(ConnectError):
        client({**good, "url": closed}).users()


# ---------------------------------------------------------------------- failures
def test_a_refused_bind_keeps_the_last_list_and_the_metric_says_so(
    slapd: Slapd, dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the daemon: a cycle that logs in to each LDAP user, then a wrong bind password."""
    names = people(slapd, dovecot, 3)
    for name in names:
        dovecot.add_user(name, "pw")
    (tmp_path / "users.txt").write_text("filed-1\n")
    password = reader_file(slapd, tmp_path)
    master = secret_file(tmp_path / "secrets", "master", dovecot.master_password)
    template = {"host": dovecot.host, "port": dovecot.imaps_port, "ca_file": str(dovecot.ca_file),
                "username": f"{{user}}*{dovecot.master_user}", "password_file": str(master)}  # fmt: skip
    config = tmp_path / "quotawatch.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "schedule": {"interval": "15m", "jitter": "0s", "cleanup": False},
        "account_sources": [
            {"name": "dir", "refresh": "1h", "template": template,
             "ldap": settings(slapd, dovecot, password, filter=only(names[0].rsplit("-", 1)[0]))},
            {"name": "file", "refresh": "1h", "usernames_file": str(tmp_path / "users.txt"),
             "template": {"host": dovecot.host, "username": "{user}", "password_env": "QW_NONE"}},
        ],
    }))  # fmt: skip
    now = [datetime.now(UTC)]
    daemon = Daemon(str(config), clock=lambda: now[0])
    daemon.start(once=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(daemon.collector)
    try:
        results = daemon.once_results(len(daemon.runtime.accounts), lambda: False)
        oks = {r.report.name: r.report.ok for r in results if r is not None}
        assert {n: oks[n] for n in names} == dict.fromkeys(names, True), "logged in to each"
        assert registry.get_sample_value("quotawatch_source_up", {"source": "dir"}) == 1

        wrong = "Wr0ng-" + secrets.token_hex(6)
        password.write_text(wrong)
        (tmp_path / "users.txt").write_text("filed-1\nfiled-2\n")
        with caplog.at_level(logging.DEBUG):
            assert daemon.reload()  # SIGHUP: the config, its secrets and every source re-read
        assert set(daemon.runtime.accounts) == {*names, "filed-1", "filed-2"}, (
            "the ldap source keeps its list; the file source goes on"
        )
        assert registry.get_sample_value("quotawatch_source_up", {"source": "dir"}) == 0
        assert registry.get_sample_value("quotawatch_source_up", {"source": "file"}) == 1
        status = {s.label: s for s in daemon.directory.statuses()}["dir"]
        assert status.error and "bind was refused" in status.error and status.users == 3
        assert "keeping the last good list of 3 users" in caplog.text
        for secret in (wrong, slapd.reader_password):
            assert secret not in caplog.text and secret not in status.error
    finally:
        daemon.stop()


@pytest.fixture
def own_slapd(dovecot: Dovecot) -> Iterator[Slapd]:
    yield from serve_slapd(dovecot, size_limit=None)


def test_a_directory_that_goes_away_keeps_its_accounts(
    own_slapd: Slapd, dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slapd = own_slapd
    names = people(slapd, dovecot, 4)
    password = reader_file(slapd, tmp_path)

    def config_now(**extra: Any) -> Config:
        return parse_config({
            "state_dir": str(tmp_path / "state"),
            "account_sources": [{
                "name": "ldap", "refresh": "1h",
                "ldap": settings(slapd, dovecot, password, **extra),
                "template": {"host": "127.0.0.1", "username": "{user}*admin",
                             "password_env": "QW_ADMIN"},
            }],
        })  # fmt: skip

    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    state = State(tmp_path / "state")
    directory = Directory(state, clock=lambda: now[0])
    first = directory.accounts(config_now(), "<config>", SecretCache())
    assert [(a.name, a.email) for a in first] == [(n, f"{n}@example.org") for n in names]

    slapd.stop()
    now[0] += timedelta(hours=1)
    with caplog.at_level(logging.ERROR):
        kept = directory.accounts(config_now(), "<config>", SecretCache())
    assert [(a.name, a.email) for a in kept] == [(n, f"{n}@example.org") for n in names]
    [status] = directory.statuses()
    assert (status.ok, status.users) == (False, 4) and "cannot reach" in str(status.error)
    # a new process with the directory still down starts from the stored copy, emails and all
    again = Directory(state, clock=lambda: now[0]).accounts(config_now(), "<config>", SecretCache())
    assert [(a.name, a.email) for a in again] == [(n, f"{n}@example.org") for n in names]

    slapd.start()
    slapd.remove_user(names[0])
    now[0] += timedelta(hours=1)
    assert [a.name for a in directory.accounts(config_now(), "<config>", SecretCache())] == names[
        1:
    ]
    assert directory.statuses()[0].ok

    # a search that suddenly finds nobody (a wrong filter, an ACL) does not empty the source
    now[0] += timedelta(hours=1)
    nobody = directory.accounts(config_now(filter="(uid=nobody-at-all)"), "<config>", SecretCache())
    assert [a.name for a in nobody] == names[1:]
    assert "listed no users" in str(directory.statuses()[0].error)
    state.close()
