"""OAuth2 pieces without a network: config rules, SASL messages, the token cache with an injected clock."""

from __future__ import annotations

import base64
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.config import OAuth2, parse_config
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import ConfigError, ConnectError, TokenError
from quotawatch.extras import MissingExtra, require
from quotawatch.mail.oauth2.providers import Grant, GrantRefused, GrantUnreachable
from quotawatch.mail.oauth2.sasl import Responder, initial_response
from quotawatch.mail.oauth2.tokens import MARGIN, STORE_NAME, TokenBroker

TOKEN = SecretStr("eyJ0eXAi.access-token.sig")


def account(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "alice",
        "host": "outlook.office365.com",
        "username": "alice@contoso.com",
    }
    base.update(kw)
    return base


def block(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"provider": "microsoft", "client_id": "app", "tenant": "contoso",
                            "client_secret_env": "QW_APP"}  # fmt: skip
    base.update(kw)
    return base


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "qw.yaml")
    return info.value.lines()


# ---------------------------------------------------------------------- config
def test_oauth2_account_needs_no_password_and_gets_provider_default_scopes() -> None:
    config = parse_config({"accounts": [account(auth="oauth2", oauth2=block())]})
    settings = config.accounts[0].oauth2
    assert settings is not None
    assert settings.effective_scopes == ("https://outlook.office365.com/.default",)
    assert settings.effective_authority == "https://login.microsoftonline.com/contoso"
    google = OAuth2(provider="google", client_id="sa", client_secret_file=Path("/k.json"))
    assert google.effective_scopes == ("https://mail.google.com/",)
    delegated = OAuth2(provider="microsoft", client_id="app", flow="delegated")
    assert "https://outlook.office365.com/IMAP.AccessAsUser.All" in delegated.effective_scopes


@pytest.mark.parametrize(
    ("acct", "expected"),
    [
        (account(auth="oauth2"), "qw.yaml: accounts[0]: auth: oauth2 needs an oauth2: block"),
        (account(auth="oauth2", oauth2=block(), password_env="X"),
         "qw.yaml: accounts[0]: auth: oauth2 takes no password_file, password_env, password_credential"),
        (account(oauth2=block(), password_env="X"),
         "qw.yaml: accounts[0]: an oauth2: block needs auth: oauth2"),
        (account(auth="oauth2", oauth2=block(client_secret_env=None)),
         "qw.yaml: accounts[0].oauth2: flow app-only needs a client secret: client_secret_file, "
         "client_secret_env, client_secret_credential or client_certificate_file"),
        (account(auth="oauth2", oauth2=block(tenant=None)),
         "qw.yaml: accounts[0].oauth2: provider microsoft with flow app-only needs tenant (or authority)"),
        (account(auth="oauth2", oauth2=block(provider="generic", tenant=None)),
         "qw.yaml: accounts[0].oauth2: provider generic needs token_endpoint"),
        (account(auth="oauth2", oauth2=block(authority="http://login.example")),
         "qw.yaml: accounts[0].oauth2: authority must be an https:// URL"),
        (account(auth="oauth2", oauth2=block(provider="yahoo")),
         "qw.yaml: accounts[0].oauth2.provider: Input should be 'microsoft', 'google' or 'generic'"),
        (account(auth="oauth2", oauth2=block(client_secret_file="/s", client_secret_env="X")),
         "qw.yaml: accounts[0].oauth2: set at most one of client_secret_file, client_secret_env, "
         "client_secret_credential, client_certificate_file"),
    ],
)  # fmt: skip
def test_oauth2_config_errors_name_the_field(acct: dict[str, Any], expected: str) -> None:
    assert expected in problems({"accounts": [acct]})


def test_account_source_template_takes_oauth2() -> None:
    config = parse_config(
        {"account_sources": [{"usernames_file": "/u.txt",
                              "template": {"host": "h", "username": "{user}@contoso.com",
                                           "auth": "oauth2", "oauth2": block()}}]}
    )  # fmt: skip
    assert config.account_sources[0].template.oauth2 is not None


def test_smtp_oauth2() -> None:
    smtp = {"host": "smtp.office365.com", "username": "qw@contoso.com", "auth": "oauth2",
            "oauth2": block(), "from": "qw@contoso.com"}  # fmt: skip
    assert parse_config({"smtp": smtp}).smtp is not None
    assert any(
        "auth: oauth2 needs username" in line
        for line in problems({"smtp": smtp | {"username": None}})
    )


# ---------------------------------------------------------------------- SASL
def test_xoauth2_and_oauthbearer_messages() -> None:
    assert initial_response("xoauth2", "alice@contoso.com", TOKEN, "h", 993) == (
        b"user=alice@contoso.com\x01auth=Bearer eyJ0eXAi.access-token.sig\x01\x01"
    )
    assert initial_response("oauthbearer", "a,b=c", TOKEN, "imap.example", 993) == (
        b"n,a=a=2Cb=3Dc,\x01host=imap.example\x01port=993\x01auth=Bearer eyJ0eXAi.access-token.sig\x01\x01"
    )


@pytest.mark.parametrize(("mechanism", "after_error"), [("xoauth2", b""), ("oauthbearer", b"\x01")])
def test_responder_answers_an_error_challenge_so_the_server_can_fail(
    mechanism: str, after_error: bytes
) -> None:
    responder = Responder(mechanism, "alice", TOKEN, "h", 993)
    assert b"auth=Bearer" in responder(b"")
    error = base64.b64decode(base64.b64encode(b'{"status":"401","schemes":"bearer"}'))
    assert responder(error) == after_error


# ---------------------------------------------------------------------- token cache
class Provider:
    """A fetcher that counts calls and hands out numbered tokens valid for an hour."""

    def __init__(self, now: list[float], fail: Exception | None = None) -> None:
        self.now, self.fail = now, fail
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, settings: OAuth2, username: str, secret: SecretStr | None,
                 refresh: SecretStr | None) -> Grant:  # fmt: skip
        self.calls.append((username, refresh.get_secret_value() if refresh else None))
        if self.fail is not None:
            raise self.fail
        n = len(self.calls)
        rt = SecretStr(f"rt-{n}") if settings.flow == "delegated" else None
        return Grant(SecretStr(f"token-{n}"), 3600, rt)


def broker(tmp_path: Path, provider: Provider, now: list[float]) -> TokenBroker:
    secrets = SecretCache(environ={"QW_APP": "app-secret"})
    tokens = TokenBroker(tmp_path, secrets, config_path="/etc/qw.yaml", clock=lambda: now[0],
                         fetchers={"microsoft": provider, "google": provider, "generic": provider})  # fmt: skip
    secrets.tokens = tokens
    return tokens


def test_app_only_token_is_shared_by_mailboxes_and_refreshed_only_near_expiry(
    tmp_path: Path,
) -> None:
    now = [1_000_000.0]
    provider = Provider(now)
    tokens = broker(tmp_path, provider, now)
    settings = OAuth2.model_validate(block())
    for user in ("alice", "bob", "carol"):  # one poll of three mailboxes
        assert tokens.access_token(settings, user, user).get_secret_value() == "token-1"
    now[0] += 3600 - MARGIN - 1  # later polls, while the token has more than MARGIN left
    assert tokens.access_token(settings, "alice", "alice").get_secret_value() == "token-1"
    now[0] += 2  # now less than MARGIN left: a new token before the old one expires
    assert tokens.access_token(settings, "alice", "alice").get_secret_value() == "token-2"
    assert len(provider.calls) == 2
    store = tmp_path / STORE_NAME
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    (file,) = store.iterdir()  # one app-only key for the three mailboxes
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # another process starts with the file: no new request
    again = broker(tmp_path, provider, now)
    assert again.access_token(settings, "bob", "bob").get_secret_value() == "token-2"
    assert len(provider.calls) == 2


def test_google_keys_tokens_by_mailbox(tmp_path: Path) -> None:
    now = [1_000_000.0]
    provider = Provider(now)
    tokens = broker(tmp_path, provider, now)
    settings = OAuth2(provider="google", client_id="sa", client_secret_env="QW_APP")
    tokens.access_token(settings, "alice", "alice")
    tokens.access_token(settings, "bob", "bob")
    tokens.access_token(settings, "alice", "alice")
    assert [u for u, _ in provider.calls] == ["alice", "bob"]


def test_delegated_uses_and_rotates_the_stored_refresh_token(tmp_path: Path) -> None:
    now = [1_000_000.0]
    provider = Provider(now)
    tokens = broker(tmp_path, provider, now)
    settings = OAuth2(provider="microsoft", client_id="app", flow="delegated")
    with pytest.raises(TokenError) as info:
        tokens.access_token(settings, "alice", "alice")
    assert info.value.reason == "auth"
    assert str(info.value) == (
        "alice: no OAuth2 sign-in stored for alice; run: "
        "quotawatch auth login --config /etc/qw.yaml --account alice"
    )
    tokens.save_sign_in(settings, "alice", "alice", Grant(SecretStr("t0"), -1, SecretStr("rt-0")))
    assert tokens.access_token(settings, "alice", "alice").get_secret_value() == "token-1"
    assert provider.calls == [("alice", "rt-0")]
    now[0] += 3600
    tokens.access_token(settings, "alice", "alice")
    assert provider.calls[-1] == ("alice", "rt-1")  # the rotated refresh token was kept


@pytest.mark.parametrize(
    ("flow", "fail", "error", "words"),
    [
        ("delegated", GrantRefused("invalid_grant", "AADSTS50173: revoked"), TokenError,
         "the OAuth2 refresh token was refused (invalid_grant: AADSTS50173: revoked); sign in again: "
         "quotawatch auth login --config /etc/qw.yaml --account alice"),
        ("app-only", GrantRefused("invalid_client", "AADSTS7000215"), TokenError,
         "the OAuth2 token endpoint refused the app credential (invalid_client: AADSTS7000215)"),
        ("app-only", GrantUnreachable("ConnectionError: refused"), ConnectError,
         "OAuth2 token endpoint unreachable: ConnectionError: refused"),
    ],
)  # fmt: skip
def test_token_failures_become_account_errors(
    tmp_path: Path, flow: str, fail: Exception, error: type[Exception], words: str
) -> None:
    now = [1_000_000.0]
    tokens = broker(tmp_path, Provider(now, fail), now)
    settings = OAuth2.model_validate(block(flow=flow))
    if flow == "delegated":
        tokens.save_sign_in(
            settings, "alice", "alice", Grant(SecretStr("t0"), -1, SecretStr("rt-0"))
        )
    with pytest.raises(error) as info:
        tokens.access_token(settings, "alice", "alice")
    assert words in str(info.value)
    assert "app-secret" not in str(info.value) and "rt-0" not in str(info.value)


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msal", None)  # what an install without the extra looks like
    with pytest.raises(MissingExtra) as info:
        require("msal", extra="oauth2", feature="auth: oauth2 with provider microsoft")
    assert str(info.value).startswith(
        "auth: oauth2 with provider microsoft needs the Python package msal: "
        "pip install 'quotawatch[oauth2]'"
    )


def test_refresh_lapse_metric_from_the_token_cache(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from quotawatch.config import Account
    from quotawatch.mail.oauth2.signin import REFRESH_LAPSE_SECONDS, refresh_lapses
    from quotawatch.service.metrics import Counters, Histogram, StateCollector
    from quotawatch.state import State

    now = [1_000_000.0]
    tokens = broker(tmp_path, Provider(now), now)
    delegated = {"provider": "microsoft", "client_id": "app", "flow": "delegated"}
    accounts = [
        Account.model_validate(account(name=n, username=n, auth="oauth2", oauth2=delegated))
        for n in ("alice", "bob")
    ]
    assert accounts[0].oauth2 is not None
    tokens.save_sign_in(accounts[0].oauth2, "alice", "alice", Grant(TOKEN, 3600, SecretStr("rt")))
    state = State(tmp_path / "state")
    collector = StateCollector(state, Counters(), Histogram())
    collector.configure(["alice", "bob"], 10, True)
    collector.oauth2_expiry = lambda: refresh_lapses(accounts, tokens)
    registry = CollectorRegistry()
    registry.register(collector)
    name = "quotawatch_oauth2_token_expiry_timestamp_seconds"
    assert registry.get_sample_value(name, {"account": "alice"}) == now[0] + REFRESH_LAPSE_SECONDS
    assert registry.get_sample_value(name, {"account": "bob"}) == 0  # never signed in
    state.close()


def test_an_account_without_the_extra_fails_with_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quotawatch.config import Account
    from quotawatch.mail.oauth2.tokens import secret_cache
    from quotawatch.service.jobs import check_accounts

    monkeypatch.setitem(sys.modules, "msal", None)
    monkeypatch.setenv("QW_APP", "app-secret")
    config = parse_config(
        {"state_dir": str(tmp_path), "accounts": [account(auth="oauth2", oauth2=block())]}
    )
    acct: Account = config.accounts[0]
    (report,) = check_accounts([acct], secret_cache(config))
    assert report.reason == "config"
    assert str(report.error).startswith(
        "auth: oauth2 with provider microsoft needs the Python package msal: pip install 'quotawatch[oauth2]'"
    )


def test_short_lived_tokens_are_still_reused_within_a_poll(tmp_path: Path) -> None:
    """A provider's 5-minute tokens (Keycloak's default) are kept for 3¾ minutes, not refetched
    on every login (the 5-minute margin would otherwise exceed their whole life)."""
    now = [1_000_000.0]
    fetched: list[int] = []

    def five_minutes(settings: OAuth2, username: str, secret: Any, refresh: Any) -> Grant:
        fetched.append(1)
        return Grant(SecretStr(f"short-{len(fetched)}"), 300)

    secrets = SecretCache(environ={"QW_APP": "s"})
    tokens = TokenBroker(
        tmp_path, secrets, clock=lambda: now[0], fetchers={"generic": five_minutes}
    )
    settings = OAuth2(provider="generic", client_id="c", client_secret_env="QW_APP",
                      token_endpoint="https://idp.example/token")  # fmt: skip
    for user in ("a", "b", "c"):
        assert tokens.access_token(settings, user, user).get_secret_value() == "short-1"
    now[0] += 224
    assert tokens.access_token(settings, "a", "a").get_secret_value() == "short-1"
    now[0] += 2
    assert tokens.access_token(settings, "a", "a").get_secret_value() == "short-2"


def test_daemon_exports_the_refresh_lapse_of_delegated_accounts(tmp_path: Path) -> None:
    import yaml
    from prometheus_client import CollectorRegistry

    from quotawatch.mail.oauth2.signin import REFRESH_LAPSE_SECONDS
    from quotawatch.service.daemon import Daemon

    delegated = {"provider": "microsoft", "client_id": "app", "flow": "delegated"}
    data = {"state_dir": str(tmp_path / "state"),
            "accounts": [account(name=n, username=n, auth="oauth2", oauth2=delegated) for n in ("me", "you")]}  # fmt: skip
    path = tmp_path / "qw.yaml"
    path.write_text(yaml.safe_dump(data))
    daemon = Daemon(str(path))
    try:
        daemon.start(paused=True)
        tokens = daemon.runtime.secrets.tokens
        assert isinstance(tokens, TokenBroker)
        settings = OAuth2.model_validate(delegated)
        tokens.save_sign_in(settings, "me", "me", Grant(TOKEN, 3600, SecretStr("rt")))
        registry = CollectorRegistry()
        registry.register(daemon.collector)
        name = "quotawatch_oauth2_token_expiry_timestamp_seconds"
        lapse = registry.get_sample_value(name, {"account": "me"})
        assert lapse is not None and lapse > REFRESH_LAPSE_SECONDS
        assert registry.get_sample_value(name, {"account": "you"}) == 0
    finally:
        daemon.stop()
