"""RenewingSession: a new login before the token runs out, no retry for other errors nor after a POP3 DELE (the BYE retry: tests/integration/test_oauth2_expired_bye.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import ConnectError
from quotawatch.mail.oauth2.providers import Grant
from quotawatch.mail.oauth2.renew import RENEW_BEFORE, open_account
from quotawatch.mail.oauth2.tokens import TokenBroker
from quotawatch.model import FolderInfo

BYE = "connection lost (folder sizes): Session invalidated - AccessTokenExpired"


class Session:
    """A logged-in session as the factory gives it: records calls, fails as told."""

    def __init__(self, name: str, token: str, protocol: str, fail: list[str]) -> None:
        self.account, self.token, self.protocol = name, token, protocol
        self.deferred_deletes = protocol == "pop3"
        self.fail, self.closed = fail, False
        self.calls: list[str] = []

    def folders(self) -> tuple[FolderInfo, ...]:
        self.calls.append("folders")
        if self.fail:
            raise ConnectError(self.account, self.fail.pop())
        return (FolderInfo("INBOX", 1, 10, None),)

    def delete(self, folder: str, uidvalidity: int | None, uids: Any, *_: Any) -> int:
        self.calls.append("delete")
        return len(uids)

    def close(self) -> None:
        self.closed = True


def setup(
    tmp_path: Path, protocol: str = "imap", fail: list[str] | None = None
) -> tuple[Any, list[Session], list[float]]:
    now = [1_000_000.0]
    fetched: list[int] = []

    def fetch(settings: Any, username: str, secret: Any, refresh: Any) -> Grant:
        fetched.append(1)
        return Grant(SecretStr(f"token-{len(fetched)}"), 3600)

    secrets = SecretCache(environ={"QW_APP": "s"})
    secrets.tokens = TokenBroker(
        tmp_path, secrets, clock=lambda: now[0], fetchers={"microsoft": fetch}
    )
    account = Account.model_validate({
        "name": "alice", "host": "outlook.office365.com", "username": "alice@contoso.com",
        "protocol": protocol, "auth": "oauth2", **({"quota": "1GB"} if protocol == "pop3" else {}),
        "oauth2": {"provider": "microsoft", "client_id": "app", "tenant": "t", "client_secret_env": "QW_APP"},
    })  # fmt: skip
    sessions: list[Session] = []
    failures = list(fail or [])

    def factory(acct: Account, token: SecretStr) -> Any:
        sessions.append(Session(acct.name, token.get_secret_value(), protocol, failures))
        return sessions[-1]

    return open_account(account, secrets, factory), sessions, now


def test_logs_in_again_before_the_token_expires(tmp_path: Path) -> None:
    session, sessions, now = setup(tmp_path)
    session.folders()
    now[0] += 3600 - RENEW_BEFORE + 1
    session.folders()
    assert [s.token for s in sessions] == ["token-1", "token-2"]
    assert sessions[0].closed and session.renewals == 1


def test_other_connection_errors_are_not_retried(tmp_path: Path) -> None:
    session, sessions, _now = setup(tmp_path, fail=["connection lost (LIST): reset by peer"])
    with pytest.raises(ConnectError):
        session.folders()
    assert len(sessions) == 1


def test_pop3_session_is_never_replaced_after_a_dele(tmp_path: Path) -> None:
    session, sessions, now = setup(tmp_path, protocol="pop3")
    assert session.delete("INBOX", None, ["u1"]) == 1
    now[0] += 7200  # the token ran out meanwhile; the marks live only in this session
    with pytest.raises(ConnectError):
        sessions[0].fail.append(BYE)
        session.folders()
    assert len(sessions) == 1


def test_short_lived_tokens_renew_once_not_before_every_operation(tmp_path: Path) -> None:
    now = [1_000_000.0]
    fetched: list[int] = []

    def five_minutes(settings: Any, username: str, secret: Any, refresh: Any) -> Grant:
        fetched.append(1)
        return Grant(SecretStr(f"short-{len(fetched)}"), 300)

    secrets = SecretCache(environ={"QW_APP": "s"})
    secrets.tokens = TokenBroker(
        tmp_path, secrets, clock=lambda: now[0], fetchers={"microsoft": five_minutes}
    )
    account = Account.model_validate({
        "name": "alice", "host": "h", "username": "alice", "auth": "oauth2",
        "oauth2": {"provider": "microsoft", "client_id": "app", "tenant": "t", "client_secret_env": "QW_APP"},
    })  # fmt: skip
    sessions: list[Session] = []

    def factory(acct: Account, token: SecretStr) -> Any:
        sessions.append(Session(acct.name, token.get_secret_value(), "imap", []))
        return sessions[-1]

    session = open_account(account, secrets, factory)
    now[0] += 270  # 30 s left: less than the lead (300 / 8 s)
    for _ in range(5):
        session.folders()
    assert [s.token for s in sessions] == ["short-1", "short-2"]
