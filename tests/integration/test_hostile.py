"""A hostile server costs one account, bounded time and bounded memory; the Dovecot account beside it stays ok."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quotawatch.cli import main
from quotawatch.config import load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.mail.tls import tls_context
from quotawatch.service.jobs import check_accounts
from sandbox.hostile import IMAP_CAPABILITIES, HostileServer
from tests.support import imap_account, secret_file, write_config

#: RSS may grow by this much while a hostile server streams up to HOSTILE_BYTES at us
RSS_BOUND = 100 << 20
HOSTILE_BYTES = 512 << 20


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class RssSampler:
    """The highest resident set size seen while the ``with`` block runs."""

    def __enter__(self) -> RssSampler:
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def hostile_account(server: HostileServer, directory: Path, **overrides: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "name": "hostile",
        "protocol": server.protocol,
        "host": server.host,
        "port": server.port,
        "username": "victim",
        "password_file": str(secret_file(directory / "secrets", "hostile", "pw")),
        "connect_timeout": 5,
        "timeout": 30,  # per read: never what ends these tests
        "command_timeout": 3,
        "job_timeout": 6,
    }
    if server.tls:
        account.update(tls="implicit", ca_file=str(server.ca_file))
    else:
        account.update(tls="none", allow_insecure_plaintext=True)
    if server.protocol == "pop3":
        account["quota"] = "10MB"
    account.update(overrides)
    return account


def check_both(
    tmp_path: Path, user: Any, server: HostileServer, capsys: Any, **overrides: Any
) -> tuple[dict[str, Any], dict[str, Any], RssSampler]:
    healthy = imap_account(user.dovecot, "healthy", user.name, user.password, tmp_path)
    config = write_config(tmp_path, [hostile_account(server, tmp_path, **overrides), healthy])
    with RssSampler() as sampler:
        code = main(["check", "--json", "--config", str(config)])
    assert code == 1
    accounts = {a["name"]: a for a in json.loads(capsys.readouterr().out)["accounts"]}
    return accounts["hostile"], accounts["healthy"], sampler


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    protocol, mode, trigger, tls = request.param
    server = HostileServer(
        protocol, mode, misbehave_on=trigger, tls=tls, max_bytes=HOSTILE_BYTES, max_seconds=60
    )
    with server:
        yield server


CASES = [
    # IMAP: imaplib's reader (greeting, CAPABILITY after login, LIST) and the lean one (GETQUOTAROOT)
    ("imap", "huge_literal", "LIST", False),
    ("imap", "huge_literal", "GETQUOTAROOT", False),
    ("imap", "huge_literal", "GETQUOTAROOT", True),
    ("imap", "absurd_literal", "LIST", False),
    ("imap", "absurd_literal", "GETQUOTAROOT", False),
    ("imap", "endless_line", "greeting", False),
    ("imap", "endless_line", "LIST", True),
    ("imap", "endless_line", "GETQUOTAROOT", True),
    ("imap", "endless_untagged", "after-login", False),
    ("imap", "endless_untagged", "LIST", False),
    ("imap", "endless_untagged", "GETQUOTAROOT", False),
    ("imap", "trickle", "greeting", False),
    ("imap", "trickle", "LIST", True),
    ("imap", "trickle", "GETQUOTAROOT", False),
    ("imap", "garbage_greeting", "greeting", False),
    ("imap", "garbage_greeting", "greeting", True),
    # POP3: CAPA after login is the first multi-line answer a check reads
    ("pop3", "endless_multiline", "after-login", False),
    ("pop3", "endless_multiline", "CAPA", True),
    ("pop3", "huge_line", "greeting", False),
    ("pop3", "huge_line", "STAT", True),
    ("pop3", "trickle", "greeting", False),
    ("pop3", "trickle", "STAT", False),
    ("pop3", "garbage_greeting", "greeting", False),
]


@pytest.mark.parametrize("hostile", CASES, indirect=True, ids=lambda c: "-".join(map(str, c)))
def test_hostile_server_fails_alone_in_bounded_time_and_memory(
    tmp_path: Path, user: Any, hostile: HostileServer, capsys: Any
) -> None:
    bad, good, sampler = check_both(tmp_path, user, hostile, capsys)
    assert good["ok"] is True, good
    assert bad["ok"] is False
    # a cap ends a stream (protocol) unless a loaded machine reaches the deadline first
    endless = {"protocol", "timeout"}
    expected = {"trickle": {"timeout"}, "endless_untagged": endless,
                "endless_multiline": endless}.get(hostile.mode, {"protocol"})  # fmt: skip
    assert bad["reason"] in expected, bad
    assert "\n" not in bad["error"] and len(bad["error"]) <= 400, bad["error"]
    assert sampler.growth < RSS_BOUND, f"RSS grew by {sampler.growth >> 20} MiB"


@pytest.mark.parametrize(
    "hostile",
    [("imap", "trickle", "after-login", False), ("pop3", "trickle", "after-login", True)],
    indirect=True,
    ids=["imap", "pop3-tls"],
)
def test_job_deadline_ends_a_server_that_answers_every_command_slowly(
    tmp_path: Path, user: Any, hostile: HostileServer, capsys: Any
) -> None:
    hostile.trickle_interval = 0.05  # each command well within command_timeout, the job not
    bad, good, _ = check_both(tmp_path, user, hostile, capsys, command_timeout=60, job_timeout=2)
    assert good["ok"] is True
    assert bad["reason"] == "timeout" and "job_timeout" in bad["error"], bad


@pytest.mark.parametrize(
    "hostile",
    [("imap", "huge_literal", "LIST", True), ("imap", "endless_untagged", "LIST", False),
     ("imap", "endless_line", "GETQUOTAROOT", False)],
    indirect=True,
    ids=lambda c: "-".join(map(str, c)),
)  # fmt: skip
def test_a_pipelined_answer_is_bounded_like_any_other(
    tmp_path: Path, user: Any, hostile: HostileServer, capsys: Any
) -> None:
    """A server offering LIST-STATUS gets GETQUOTAROOT and LIST in one write; whichever of the
    two answers misbehaves, the caps and deadlines hold and only this account fails."""
    hostile.capabilities = IMAP_CAPABILITIES + b" LIST-STATUS STATUS=SIZE"
    bad, good, sampler = check_both(tmp_path, user, hostile, capsys)
    assert good["ok"] is True, good
    assert bad["reason"] in ({"protocol", "timeout"} if hostile.mode == "endless_untagged"
                             else {"protocol"}), bad  # fmt: skip
    assert "GETQUOTAROOT, LIST" in bad["error"] and len(bad["error"]) <= 400, bad["error"]
    verbs = [c.split()[1].upper() for c in hostile.commands if len(c.split()) > 1]
    assert verbs[1] == b"GETQUOTAROOT" and (hostile.misbehave_on != b"LIST" or verbs[2] == b"LIST")
    assert sampler.growth < RSS_BOUND, f"RSS grew by {sampler.growth >> 20} MiB"


def test_one_tls_context_per_ca_file_still_checks_each_accounts_host_name(tmp_path: Path) -> None:
    """Accounts with the same ca_file share one verifying context (building one costs CPU per
    login), and every connection still checks its own host name: the certificate names
    localhost only, so the same server reached as 127.0.0.1 is refused before credentials go."""
    with HostileServer("imap", tls=True, identities=("localhost",)) as server:
        by_name = hostile_account(server, tmp_path, name="by-name", host="localhost")
        by_ip = hostile_account(server, tmp_path, name="by-ip", host="127.0.0.1")
        path = write_config(tmp_path, [by_name, by_ip, dict(by_name, name="again")])
        accounts = all_accounts(load_config(path), str(path))
        assert len({id(tls_context(a.ca_file)) for a in accounts}) == 1
        reports = list(check_accounts(accounts, SecretCache(), concurrency=1))
        logins = [c for c in server.commands if b"AUTHENTICATE" in c.upper()]
    assert [r.ok for r in reports] == [True, False, True], [r.error for r in reports]
    assert reports[1].reason == "tls" and "127.0.0.1" in str(reports[1].error), reports[1].error
    assert len(logins) == 2, "no credentials went to the connection that failed verification"
