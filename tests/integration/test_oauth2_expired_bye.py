"""Exchange's ``* BYE ... AccessTokenExpired`` from a real socket peer: one new login with a new token, the operation repeated once, never a loop."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quotawatch.cli import main
from sandbox.expiring import ExpiringServer
from sandbox.oauth_server import OAuthServer
from tests.support import secret_file, write_config

CLIENT_SECRET = "app-Secret-never-shown-" + secrets.token_urlsafe(8)
#: commands the first session answers before the BYE: AUTHENTICATE's OK carries the
#: capabilities, so the next commands are the check's own (quota, then folders)
FIRST_SESSION = 1


@pytest.fixture(autouse=True)
def _trust_provider(oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """msal uses requests, which trusts REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth.ca_file))


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[ExpiringServer]:
    with ExpiringServer(request.param, tls=True, max_seconds=30) as server:
        yield server


def check(
    tmp_path: Path,
    oauth: OAuthServer,
    peer: ExpiringServer,
    capsys: Any,
    mechanism: str = "xoauth2",
) -> tuple[int, dict[str, Any], str]:
    """A `quotawatch check --json` of one app-only oauth2 account on *peer*; the app's id."""
    client_id = f"app-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET, mailboxes=("alice",))
    account = {
        "name": "exchange", "protocol": "imap", "host": peer.host, "port": peer.port,
        "tls": "implicit", "ca_file": str(peer.ca_file), "username": "alice", "auth": "oauth2",
        "oauth2": {
            "provider": "microsoft", "client_id": client_id, "tenant": oauth.tenant,
            "authority": oauth.authority, "timeout": 10, "mechanism": mechanism,
            "client_secret_file": str(secret_file(tmp_path / "secrets", "app", CLIENT_SECRET)),
        },
        "connect_timeout": 5, "timeout": 10, "command_timeout": 5, "job_timeout": 20,
    }  # fmt: skip
    code = main(["check", "--json", "--config", str(write_config(tmp_path, [account]))])
    (report,) = json.loads(capsys.readouterr().out)["accounts"]
    return code, report, client_id


def issued(oauth: OAuthServer, client_id: str) -> list[str]:
    """The access tokens the provider gave this app, in order."""
    return [token for token, grant in list(oauth.tokens.items()) if grant.client_id == client_id]


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("peer", [(FIRST_SESSION,)], indirect=True)
def test_expired_token_bye_logs_in_once_more_with_a_new_token_and_the_check_succeeds(
    tmp_path: Path, oauth: OAuthServer, peer: ExpiringServer, capsys: Any, mechanism: str
) -> None:
    code, report, client_id = check(tmp_path, oauth, peer, capsys, mechanism)

    assert code == 0 and report["ok"] is True, report
    assert peer.byes == 1
    assert [(n, c) for n, c, _t in peer.logins] == [(0, 1), (1, 2)]  # two logins, two connections
    # the second login used a token asked for after the BYE, not the cached one
    assert sum(1 for _g, c, _s in oauth.grants if c == client_id) == 2
    first, second = issued(oauth, client_id)
    assert peer.tokens == [first, second] and first != second
    # the command the BYE answered was sent again on the new connection
    sent = [c.split(b" ", 1)[1].decode() for c in peer.commands]
    assert sent.count(f"AUTHENTICATE {mechanism.upper()}") == 2, sent
    refused = sent[1 + FIRST_SESSION]
    assert sent.count(refused) == 2, sent
    assert report["quota"], report


@pytest.mark.parametrize("peer", [(FIRST_SESSION, 0, 0, 0, 0)], indirect=True)
def test_a_second_bye_right_after_the_new_login_fails_the_account_without_a_loop(
    tmp_path: Path, oauth: OAuthServer, peer: ExpiringServer, capsys: Any
) -> None:
    code, report, client_id = check(tmp_path, oauth, peer, capsys)

    assert code == 1 and report["ok"] is False
    assert report["reason"] == "connect", report
    assert "AccessTokenExpired" in report["error"], report
    assert len(peer.logins) == 2 and peer.byes == 2  # one new login, then it gives up
    assert sum(1 for _g, c, _s in oauth.grants if c == client_id) == 2
    assert CLIENT_SECRET not in report["error"]
    assert not any(token in report["error"] for token in peer.tokens)
