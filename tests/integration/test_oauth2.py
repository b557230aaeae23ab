"""OAuth2 sign-in end to end: a local OAuth2 provider, Dovecot's oauth2 passdb, msal / google-auth / authlib unchanged."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quotawatch.config import Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.errors import LOGIN_REFUSED
from quotawatch.mail.oauth2.enrol import device_login
from quotawatch.mail.oauth2.tokens import STORE_NAME, TokenBroker, secret_cache
from quotawatch.model import AccountReport
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import check_accounts, run_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from sandbox.oauth_server import DEVICE_GRANT, OAuthServer
from tests.support import secret_file, write_config

_numbers = itertools.count(1)
CLIENT_SECRET = "app-Secret-never-shown-" + secrets.token_urlsafe(8)


@pytest.fixture(autouse=True)
def _trust_provider(oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """msal, google-auth and authlib use requests, which trusts REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth.ca_file))


def users(dovecot: Dovecot, count: int, tag: str) -> list[str]:
    names = [f"{tag}{next(_numbers)}" for _ in range(count)]
    for name in names:
        dovecot.add_user(name, secrets.token_urlsafe(12))
        msg = f"From: a@example.org\r\nSubject: hello {name}\r\n\r\nbody\r\n".encode()
        dovecot.deliver_bulk(name, "INBOX", [(msg, datetime(2024, 6, 1, tzinfo=UTC), "S")])
    return names


def microsoft(oauth: OAuthServer, client_id: str, **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "provider": "microsoft", "client_id": client_id, "tenant": oauth.tenant,
        "authority": oauth.authority, "timeout": 10,
    }  # fmt: skip
    block.update(extra)
    return block


def template(dovecot: Dovecot, protocol: str, oauth2: dict[str, Any]) -> dict[str, Any]:
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    out: dict[str, Any] = {
        "protocol": protocol, "host": dovecot.host, "port": port, "tls": "implicit",
        "ca_file": str(dovecot.ca_file), "username": "{user}", "auth": "oauth2",
        "oauth2": oauth2, "connect_timeout": 5, "timeout": 30,
    }  # fmt: skip
    if protocol == "pop3":
        out.update(name="{user}-pop3", quota="10MB")
    return out


def source(tmp_path: Path, names: list[str], tmpl: dict[str, Any], tag: str) -> dict[str, Any]:
    path = tmp_path / f"users-{tag}.txt"
    path.write_text("\n".join(names) + "\n")
    return {"usernames_file": str(path), "template": tmpl}


def by_name(reports: Iterator[AccountReport] | list[AccountReport]) -> dict[str, AccountReport]:
    return {r.name: r for r in reports}


def grants_for(oauth: OAuthServer, client_id: str, grant: str) -> int:
    return sum(1 for g, c, _s in oauth.grants if g == grant and c == client_id)


def test_app_only_one_credential_opens_every_granted_mailbox_over_imap_and_pop3(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    granted = users(dovecot_oauth2, 3, "app")
    (stranger,) = users(dovecot_oauth2, 1, "other")
    client_id = f"app-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET, mailboxes=tuple(granted))
    secret = secret_file(tmp_path / "secrets", "app", CLIENT_SECRET)
    block = microsoft(oauth, client_id, client_secret_file=str(secret))
    pop3 = microsoft(oauth, client_id, client_secret_file=str(secret), mechanism="oauthbearer")
    path = write_config(
        tmp_path, [],
        account_sources=[
            source(tmp_path, [*granted, stranger], template(dovecot_oauth2, "imap", block), "i"),
            source(tmp_path, granted, template(dovecot_oauth2, "pop3", pop3), "p"),
        ],
    )  # fmt: skip
    config = load_config(path)
    accounts = all_accounts(config, str(path))
    assert len(accounts) == 7

    reports = by_name(check_accounts(accounts, secret_cache(config, str(path)), concurrency=4))

    for name in granted:  # IMAP: quota and the delivered message, read through the token
        assert reports[name].ok, reports[name].error
        assert reports[name].snapshot is not None
        inbox = [f for f in reports[name].snapshot.folders if f.name == "INBOX"]
        assert inbox[0].messages == 1
        assert reports[name].snapshot.quota[0].limit == 10 * 1024 * 1024
        pop = reports[f"{name}-pop3"]
        assert pop.ok, pop.error
        assert pop.snapshot is not None and pop.snapshot.folders[0].messages == 1
    failed = reports[stranger]
    assert not failed.ok and failed.reason == "auth"
    assert f"{stranger}: {LOGIN_REFUSED} [AUTHENTICATIONFAILED]" == failed.error
    # one client-credentials token for all seven sessions (one endpoint call, not one per login)
    assert grants_for(oauth, client_id, "client_credentials") == 1

    store = config.state_dir / STORE_NAME
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert [stat.S_IMODE(f.stat().st_mode) for f in store.iterdir()] == [0o600]
    # a new process (the next CLI run) reuses the stored token: still one token request
    again = by_name(check_accounts(accounts, secret_cache(config, str(path)), concurrency=2))
    assert all(again[n].ok for n in granted)
    assert grants_for(oauth, client_id, "client_credentials") == 1


def _enrol(
    oauth: OAuthServer, config: Config, path: Path, broker: TokenBroker, account: str
) -> None:
    """What ``quotawatch auth login`` does: the device flow, the person approving at once."""
    (acct,) = [a for a in all_accounts(config, str(path)) if a.name == account]
    assert acct.oauth2 is not None
    shown: list[str] = []

    def show(message: str) -> None:
        shown.append(message)
        (code,) = [c for c in oauth.pending_user_codes() if c in message]
        oauth.approve(code, acct.username)

    secret = broker.secrets.client_secret(acct.oauth2) if acct.oauth2.has_secret else None
    grant = device_login(acct.oauth2, secret, show, sleep=lambda _s: None)
    broker.save_sign_in(acct.oauth2, acct.username, acct.name, grant)
    assert shown and "enter the code" in shown[0]


def test_revoked_refresh_token_fails_that_account_with_auth_and_says_what_to_run(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    alice, bob = users(dovecot_oauth2, 2, "person")
    client_id = f"public-{secrets.token_hex(4)}"
    oauth.register_client(client_id)  # a public client: no secret, delegated sign-in only
    block = microsoft(oauth, client_id, flow="delegated")
    accts = [
        template(dovecot_oauth2, "imap", block) | {"name": n, "username": n} for n in (alice, bob)
    ]
    path = write_config(tmp_path, accts)
    config = load_config(path)
    secrets_ = SecretCache()
    broker = TokenBroker(config.state_dir, secrets_, config_path=str(path))
    secrets_.tokens = broker
    for name in (alice, bob):
        _enrol(oauth, config, path, broker, name)
    assert grants_for(oauth, client_id, DEVICE_GRANT) == 2

    first = by_name(check_accounts(all_accounts(config, str(path)), secrets_, concurrency=2))
    assert first[alice].ok and first[bob].ok, (first[alice].error, first[bob].error)
    assert grants_for(oauth, client_id, "refresh_token") == 0  # the enrolment's token was used

    # revoked at the provider's revocation endpoint (RFC 7009), as a user or admin would
    (alices,) = [t for t, i in oauth.refresh_tokens.items() if i.subject == alice and not i.revoked]
    endpoint = requests.get(f"{oauth.authority}/v2.0/.well-known/openid-configuration",
                            verify=str(oauth.ca_file), timeout=10).json()["revocation_endpoint"]  # fmt: skip
    answer = requests.post(endpoint, data={"token": alices, "token_type_hint": "refresh_token",
                           "client_id": client_id}, verify=str(oauth.ca_file), timeout=10)  # fmt: skip
    assert answer.status_code == 200 and oauth.refresh_tokens[alices].revoked
    later = SecretCache()  # two hours on: both access tokens have expired
    later.tokens = TokenBroker(
        config.state_dir, later, config_path=str(path), clock=lambda: time.time() + 7200
    )
    second = by_name(check_accounts(all_accounts(config, str(path)), later, concurrency=2))
    assert second[bob].ok, second[bob].error
    failed = second[alice]
    assert not failed.ok and failed.reason == "auth"
    assert f"quotawatch auth login --config {path} --account {alice}" in str(failed.error)
    assert "invalid_grant" in str(failed.error)


def _service_account_key(client_email: str, token_uri: str) -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = {
        "type": "service_account", "project_id": "qw-test", "private_key_id": secrets.token_hex(8),
        "private_key": pem, "client_email": client_email, "client_id": "1234567890",
        "token_uri": token_uri,
    }  # fmt: skip
    return json.dumps(info, indent=2), public


@pytest.mark.parametrize("where", ["key_file", "config"])
def test_google_service_account_impersonates_each_mailbox(
    tmp_path: Path,
    oauth: OAuthServer,
    dovecot_oauth2: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """The token endpoint as google-auth reads it, ``token_uri`` in the service-account key
    (the key as a systemd credential), or from the config's ``token_endpoint``, which wins over
    the key's (the key file from a path)."""
    names = users(dovecot_oauth2, 2, "gsa")
    email = f"quotawatch-{secrets.token_hex(3)}@qw-test.iam.gserviceaccount.com"
    in_key = oauth.token_endpoint if where == "key_file" else "https://oauth2.googleapis.com/token"
    key_json, public = _service_account_key(email, in_key)
    oauth.register_client(email, public_key_pem=public, client_email=email, mailboxes=tuple(names))
    block: dict[str, Any] = {"provider": "google", "client_id": email, "timeout": 10}
    if where == "key_file":
        credentials = tmp_path / "credentials"  # what systemd's LoadCredential= provides
        credentials.mkdir()
        (credentials / "google-sa.json").write_text(key_json)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
        block["client_secret_credential"] = "google-sa.json"
    else:
        key_file = secret_file(tmp_path / "secrets", "sa", key_json)
        block |= {"client_secret_file": str(key_file), "token_endpoint": oauth.token_endpoint}
    path = write_config(
        tmp_path,
        [],
        account_sources=[source(tmp_path, names, template(dovecot_oauth2, "imap", block), "g")],
    )
    config = load_config(path)
    reports = by_name(
        check_accounts(
            all_accounts(config, str(path)), secret_cache(config, str(path)), concurrency=2
        )
    )
    assert all(r.ok for r in reports.values()), [r.error for r in reports.values()]
    # domain-wide delegation: one assertion per impersonated mailbox
    assert sorted(s for g, c, s in oauth.grants if c == email) == sorted(names)


def test_token_expiring_mid_cleanup_logs_in_again_and_the_job_finishes(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (name,) = users(dovecot_oauth2, 1, "long")
    old = datetime.now(UTC) - timedelta(days=90)
    for folder in ("Trash", "Junk"):
        msgs = [(f"Subject: {folder} {i}\r\n\r\nx\r\n".encode(), old, "S") for i in range(5)]
        dovecot_oauth2.deliver_bulk(name, folder, msgs)
    client_id = f"app-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET, mailboxes=(name,))
    block = microsoft(
        oauth, client_id, client_secret_file=str(secret_file(tmp_path, "app", CLIENT_SECRET))
    )
    acct = template(dovecot_oauth2, "imap", block) | {
        "name": name, "username": name, "rules": ["trash", "junk"], "max_delete_fraction": "100%",
    }  # fmt: skip
    rules = {
        "trash": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"},
        "junk": {"folders": ["\\Junk"], "older_than": "30d", "age": "received"},
    }
    path = write_config(tmp_path, [acct], rules=rules)
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    clock = [time.time()]
    cache = SecretCache()
    cache.tokens = TokenBroker(config.state_dir, cache, clock=lambda: clock[0])

    lines: list[str] = []

    def progress(line: str) -> None:  # once the first folder is done: two hours pass
        lines.append(line)
        if len(lines) == 1:
            clock[0] += 7200

    state = State(config.state_dir)
    try:
        result = run_account(
            account, config, state, cache, cleanup=True, now=datetime.now(UTC), progress=progress,
            audit=AuditLog(config.state_dir / "audit.jsonl"),
        )  # fmt: skip
    finally:
        state.close()
    assert result.ok, result.failures
    assert result.cleanup is not None and result.cleanup.messages == 10
    assert grants_for(oauth, client_id, "client_credentials") == 2
    assert "logging in again with a new OAuth2 token (the token expires soon)" in caplog.text
    counts = {f: int(dovecot_oauth2.doveadm("-f", "flow", "mailbox", "status", "-u", name, "messages", f).split("=")[1])
              for f in ("Trash", "Junk")}  # fmt: skip
    assert counts == {"Trash": 0, "Junk": 0}


def test_app_only_with_a_certificate_instead_of_a_secret(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    (name,) = users(dovecot_oauth2, 1, "cert")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quotawatch app")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + cert.public_bytes(serialization.Encoding.PEM)
    client_id = f"certapp-{secrets.token_hex(4)}"
    oauth.register_client(
        client_id, mailboxes=(name,),
        public_key_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )  # fmt: skip
    cert_file = secret_file(tmp_path / "secrets", "app-cert", pem.decode())
    block = microsoft(oauth, client_id, client_certificate_file=str(cert_file))
    path = write_config(
        tmp_path, [template(dovecot_oauth2, "imap", block) | {"name": name, "username": name}]
    )
    config = load_config(path)
    (report,) = check_accounts(all_accounts(config, str(path)), secret_cache(config, str(path)))
    assert report.ok, report.error
    assert grants_for(oauth, client_id, "client_credentials") == 1
    cert_file.chmod(0o644)  # the same rule as for passwords
    (refused,) = check_accounts(all_accounts(config, str(path)), secret_cache(config, str(path)))
    assert refused.ok  # the cached token needs no key
    shutil.rmtree(config.state_dir / STORE_NAME)
    (refused,) = check_accounts(all_accounts(config, str(path)), secret_cache(config, str(path)))
    assert refused.reason == "config"
    assert "readable or writable by group or others" in str(refused.error)


def test_quota_from_microsoft_graph_one_report_for_the_tenant(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    names = users(dovecot_oauth2, 3, "graph")
    client_id = f"reports-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET, mailboxes=tuple(names))
    oauth.mailbox_usage.update({names[0]: (40 * 10**9, 50 * 10**9), names[1]: (10**9, 50 * 10**9)})
    block = microsoft(oauth, client_id, graph_url=oauth.graph_url,
                      client_secret_file=str(secret_file(tmp_path, "app", CLIENT_SECRET)))  # fmt: skip
    tmpl = template(dovecot_oauth2, "imap", block) | {
        "provider": "microsoft365",
        "quota_from_graph": True,
    }
    path = write_config(tmp_path, [], account_sources=[source(tmp_path, names, tmpl, "r")])
    config = load_config(path)
    before = len(oauth.graph_requests)
    reports = by_name(
        check_accounts(
            all_accounts(config, str(path)), secret_cache(config, str(path)), concurrency=3
        )
    )
    assert all(r.ok for r in reports.values()), [r.error for r in reports.values()]
    first = reports[names[0]].snapshot
    assert first is not None
    (quota,) = first.quota
    assert (quota.root, quota.usage, quota.limit) == ("graph", 40 * 10**9, 50 * 10**9)
    assert any("Microsoft Graph's mailbox usage report of 2026-11-29" in n for n in first.notes)
    missing = reports[names[2]].snapshot
    assert missing is not None and missing.quota == ()
    assert any("has no line for" in n for n in missing.notes)
    asked = [p for p, ok in oauth.graph_requests[before:] if "getMailboxUsageDetail" in p and ok]
    assert len(asked) == 1  # one report for the whole tenant and cycle


def test_a_refused_graph_report_fails_each_account_once_not_one_request_each(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    names = users(dovecot_oauth2, 3, "nograph")
    client_id = f"noreports-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET, mailboxes=tuple(names))
    oauth.graph_forbidden.add(client_id)  # Reports.Read.All not granted
    block = microsoft(oauth, client_id, graph_url=oauth.graph_url,
                      client_secret_file=str(secret_file(tmp_path, "app", CLIENT_SECRET)))  # fmt: skip
    tmpl = template(dovecot_oauth2, "imap", block) | {
        "provider": "microsoft365",
        "quota_from_graph": True,
    }
    path = write_config(tmp_path, [], account_sources=[source(tmp_path, names, tmpl, "n")])
    config = load_config(path)
    before = len(oauth.graph_requests)
    reports = list(
        check_accounts(
            all_accounts(config, str(path)), secret_cache(config, str(path)), concurrency=3
        )
    )
    assert {r.reason for r in reports} == {"protocol"}
    assert all("needs the application permission Reports.Read.All" in str(r.error) for r in reports)
    assert len(oauth.graph_requests) - before == 1


def test_generic_provider_device_sign_in_then_refresh_through_authlib(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    (name,) = users(dovecot_oauth2, 1, "generic")
    client_id = f"generic-{secrets.token_hex(4)}"
    oauth.register_client(client_id, secret=CLIENT_SECRET)
    block = {
        "provider": "generic", "flow": "delegated", "client_id": client_id, "timeout": 10,
        "token_endpoint": oauth.token_endpoint, "device_authorization_endpoint": oauth.device_endpoint,
        "scopes": ["mail"], "client_secret_file": str(secret_file(tmp_path, "gen", CLIENT_SECRET)),
        "mechanism": "oauthbearer",
    }  # fmt: skip
    path = write_config(
        tmp_path, [template(dovecot_oauth2, "pop3", block) | {"name": name, "username": name}]
    )
    config = load_config(path)
    cache = SecretCache()
    broker = TokenBroker(config.state_dir, cache, config_path=str(path), clock=time.time)
    cache.tokens = broker
    _enrol(oauth, config, path, broker, name)  # device flow by plain requests polling, as RFC 8628
    later = SecretCache()
    later.tokens = TokenBroker(config.state_dir, later, clock=lambda: time.time() + 7200)
    (report,) = check_accounts(all_accounts(config, str(path)), later)
    assert report.ok, report.error
    assert grants_for(oauth, client_id, "refresh_token") == 1  # authlib's refresh grant
