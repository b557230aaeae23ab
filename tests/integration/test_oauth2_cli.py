"""A person's mailbox as they would set it up: `quotawatch auth login` (device code), `auth status`, then `run --once`."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from quotawatch.mail.oauth2.tokens import STORE_NAME
from sandbox.dovecot import Dovecot
from sandbox.oauth_server import DEVICE_GRANT, OAuthServer
from tests.support import write_config

REPO = Path(__file__).resolve().parents[2]


def quotawatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotawatch", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip


def test_device_code_enrolment_then_a_daemon_cycle(
    tmp_path: Path, oauth: OAuthServer, dovecot_oauth2: Dovecot
) -> None:
    name = f"person{secrets.token_hex(3)}"
    dovecot_oauth2.add_user(name, secrets.token_urlsafe(12))
    client_id = f"public-{secrets.token_hex(4)}"
    oauth.register_client(client_id)
    account = {
        "name": name, "host": dovecot_oauth2.host, "port": dovecot_oauth2.imaps_port,
        "ca_file": str(dovecot_oauth2.ca_file), "username": name, "auth": "oauth2",
        "oauth2": {"provider": "microsoft", "flow": "delegated", "client_id": client_id,
                   "authority": oauth.authority, "timeout": 10},
    }  # fmt: skip
    path = write_config(tmp_path, [account])
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(oauth.ca_file)}

    before = quotawatch(env, "auth", "status", "--config", str(path))
    assert before.returncode == 1
    assert f"run: quotawatch auth login --config {path} --account {name}" in before.stdout
    refused = quotawatch(env, "check", "--config", str(path), "--json")
    (report,) = json.loads(refused.stdout)["accounts"]
    assert report["reason"] == "auth" and "quotawatch auth login" in report["error"]

    login = subprocess.Popen(
        [sys.executable, "-m", "quotawatch", "auth", "login", "--config", str(path), "--account", name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert login.stderr is not None
    instructions = login.stderr.readline()
    (code,) = re.findall(r"enter the code (\w+)", instructions)
    oauth.approve(code, name)  # the person signs in in a browser
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0, err
    store = tmp_path / "state" / STORE_NAME
    assert out.strip() == f"{name}: signed in; refresh token stored in {store}/ (mode 0600)"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert [stat.S_IMODE(f.stat().st_mode) for f in store.iterdir()] == [0o600]
    assert sum(1 for g, c, _s in oauth.grants if g == DEVICE_GRANT and c == client_id) >= 1
    for issued in (*oauth.tokens, *oauth.refresh_tokens):
        assert issued not in out + err + instructions

    status = quotawatch(env, "auth", "status", "--config", str(path), "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)["accounts"]
    assert row["refresh_token"] is True and row["action"] is None
    assert row["access_token_expires_at"] and row["refresh_token_lapses_at"]

    cycle = quotawatch(env, "run", "--once", "--config", str(path))
    assert cycle.returncode == 0, cycle.stderr
    assert "run --once: 1 accounts, 1 ok, 0 failed" in cycle.stderr
