"""The doveadm client and the doveadm account source against a real Dovecot with its HTTP API on."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from quotawatch.config import Config, parse_config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import AuthError, ConnectError, TLSError
from quotawatch.mail.doveadm import Doveadm
from quotawatch.service.directory import Directory, open_doveadm
from quotawatch.state import State
from sandbox.dovecot import DOVEADM_BIN, Dovecot, make_base_dir


def api(server: Dovecot, **extra: object) -> DoveadmAccess:
    return DoveadmAccess.model_validate(
        {"url": server.doveadm_url, "api_key_file": str(server.doveadm_key_file),
         "ca_file": str(server.ca_file), "timeout": 30, **extra}
    )  # fmt: skip


def users_on(server: Dovecot, count: int, prefix: str) -> list[str]:
    names = [f"{prefix}{secrets.token_hex(3)}" for _ in range(count)]
    server.add_users([(n, "pw", (i + 1) * 1024 * 1024, None) for i, n in enumerate(names)])
    return names


def test_users_and_quotas_over_the_http_api(dovecot_api: Dovecot) -> None:
    names = users_on(dovecot_api, 3, "h")
    dovecot_api.add_user("hnolimit" + secrets.token_hex(2), "pw", quota_bytes=0)
    client = open_doveadm(api(dovecot_api), SecretCache())
    assert set(names) <= set(client.users())
    quotas = client.quotas()
    for i, name in enumerate(names):
        storage = {q.resource: q for q in quotas[name]}["STORAGE"]
        assert (storage.usage, storage.limit) == (0, (i + 1) * 1024 * 1024)  # KiB -> bytes
        assert storage.root == "User quota"
    unlimited = [q for u, qs in quotas.items() if u.startswith("hnolimit") for q in qs]
    assert unlimited and all(q.limit == 0 for q in unlimited)  # "-" = no limit


def test_the_local_command_gives_the_same_answers(dovecot_api: Dovecot) -> None:
    names = users_on(dovecot_api, 2, "l")
    local = Doveadm(DoveadmAccess(command=(DOVEADM_BIN, "-c", str(dovecot_api.conf_file))))
    remote = open_doveadm(api(dovecot_api), SecretCache())
    assert set(names) <= set(local.users())
    assert sorted(local.users()) == sorted(remote.users())
    assert local.quotas() == remote.quotas()


def test_wrong_key_untrusted_ca_and_closed_port_fail_with_reasons(dovecot_api: Dovecot) -> None:
    wrong = Doveadm(api(dovecot_api), SecretStr("not-the-key"))
    with pytest.raises(AuthError) as auth:
        wrong.users()
    assert "not-the-key" not in str(auth.value)
    other_ca = Doveadm(api(dovecot_api, ca_file=str(dovecot_api.other_ca_file)), SecretStr("x"))
    with pytest.raises(TLSError):
        other_ca.users()
    closed = api(dovecot_api, url=f"https://127.0.0.1:{dovecot_api.imap_port + 40000 % 20000}/")
    with pytest.raises((ConnectError, TLSError)):
        Doveadm(closed, SecretStr("x")).users()


@pytest.fixture
def own_api_server() -> Iterator[Dovecot]:
    base = make_base_dir("qw-srcfail-")
    server = Dovecot(base, name="srcfail", doveadm_api=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if os.environ.get("QW_KEEP_SANDBOX") != "1":
            shutil.rmtree(base, ignore_errors=True)


def test_a_source_that_fails_mid_run_keeps_its_last_good_list(
    own_api_server: Dovecot, tmp_path: Path
) -> None:
    server = own_api_server
    names = users_on(server, 4, "s")

    def config_now() -> Config:
        return parse_config({
            "state_dir": str(tmp_path),
            "account_sources": [{
                "name": "dovecot", "refresh": "1h",
                "doveadm": api(server).model_dump(mode="json", exclude_unset=True),
                "template": {"host": "127.0.0.1", "ca_file": str(server.ca_file),
                             "username": "{user}*admin", "password_env": "QW_ADMIN"},
            }],
        })  # fmt: skip

    config = config_now()
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    state = State(tmp_path)
    directory = Directory(state, clock=lambda: now[0])
    first = directory.accounts(config, "<config>", SecretCache())
    assert sorted(a.name for a in first) == sorted(names)
    assert first[0].doveadm == config.account_sources[0].doveadm  # the source's own doveadm
    [status] = directory.statuses()
    assert (status.label, status.ok, status.users) == ("dovecot", True, 4)

    server.stop()
    assert not directory.due(config)  # not before refresh
    now[0] += timedelta(hours=1)
    assert directory.due(config)
    kept = directory.accounts(config, "<config>", SecretCache())
    assert sorted(a.name for a in kept) == sorted(names), "a failed read keeps the last good list"
    [status] = directory.statuses()
    assert (status.ok, status.users) == (False, 4) and status.error

    # a new process (empty memory) with the server still down starts from the stored copy
    again = Directory(state, clock=lambda: now[0]).accounts(config, "<config>", SecretCache())
    assert sorted(a.name for a in again) == sorted(names)

    server.start()  # on new ports: the source's URL changes, its name and kept list do not
    server.remove_user(names[0])
    now[0] += timedelta(hours=1)
    recovered = directory.accounts(config_now(), "<config>", SecretCache())
    assert sorted(a.name for a in recovered) == sorted(names[1:])
    assert directory.statuses()[0].ok


def test_check_says_where_each_number_came_from(
    dovecot_api: Dovecot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet, full = users_on(dovecot_api, 1, "c")[0], f"cfull{secrets.token_hex(2)}"
    dovecot_api.add_user(full, "pw", quota_bytes=1024 * 1024)
    when = datetime.now(UTC) - timedelta(days=1)
    body = b"Subject: x\r\n\r\n" + b"x" * 1_000_000 + b"\r\n"  # ~95 % of full's 1 MiB
    dovecot_api.deliver_bulk(full, "INBOX", [(body, when, "S")])
    secret = tmp_path / "master"
    secret.write_text(dovecot_api.master_password)
    secret.chmod(0o600)
    access = api(dovecot_api).model_dump(mode="json", exclude_unset=True)
    accounts = [
        {"name": n, "host": "127.0.0.1", "port": dovecot_api.imaps_port,
         "ca_file": str(dovecot_api.ca_file), "username": f"{n}*{dovecot_api.master_user}",
         "password_file": str(secret), "quota_source": "doveadm", "doveadm": access}
        for n in (quiet, full)
    ]  # fmt: skip
    config = tmp_path / "quotawatch.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "accounts": accounts}))
    from quotawatch.cli import main

    assert main(["check", "--json", "--config", str(config)]) == 0
    out = {a["name"]: a for a in json.loads(capsys.readouterr().out)["accounts"]}
    assert out[quiet]["origin"] == {"quota": "doveadm", "folders": None, "folders_checked_at": None}
    assert out[quiet]["folders"] == [] and "imap_when_above" in out[quiet]["notes"][0]
    assert out[quiet]["quota"][0]["limit"] == 1024 * 1024
    assert out[full]["origin"] == {"quota": "imap", "folders": "imap", "folders_checked_at": None}
    assert out[full]["usage_ratio"] > 0.9 and out[full]["folders"]
