"""Proves the sandbox's doveadm HTTP API (``Dovecot(doveadm_api=True)``) answers as Dovecot's docs say.

Only the standard library talks to the server here (urllib over verified TLS, imaplib), so a
failure points at the sandbox, not at quotawatch's doveadm client.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import secrets
import ssl
from typing import Any

from sandbox.dovecot import Dovecot


def post(server: Dovecot, body: Any, key: str | None = None) -> tuple[int, Any]:
    token = base64.b64encode((key or server.doveadm_api_key).encode()).decode()
    context = ssl.create_default_context(cafile=str(server.ca_file))
    conn = http.client.HTTPSConnection(
        server.host, server.doveadm_port, context=context, timeout=30
    )
    try:
        conn.request(
            "POST",
            "/doveadm/v1",
            body=json.dumps(body).encode(),
            headers={"Authorization": f"X-Dovecot-API {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def test_user_list_and_quota_of_all_users(dovecot_api: Dovecot) -> None:
    names = [f"f{secrets.token_hex(3)}" for _ in range(3)]
    dovecot_api.add_users(
        [(n, "pw-" + n, (i + 1) * 1024 * 1024, None) for i, n in enumerate(names)]
    )
    dovecot_api.add_user(f"nolimit{secrets.token_hex(2)}", "pw", quota_bytes=0)

    listed = post(dovecot_api, [["user", {"userMask": ["*"]}, "t1"]])[1]
    assert listed[0][0] == "doveadmResponse" and listed[0][2] == "t1"
    assert set(names) <= set(listed[0][1]["userList"])

    quota = post(dovecot_api, [["quotaGet", {"allUsers": True}, "t2"]])[1][0][1]
    rows = {(r["username"], r["type"]): r for r in quota}
    for i, name in enumerate(names):
        assert rows[(name, "STORAGE")]["limit"] == str((i + 1) * 1024)  # KiB, as strings
        assert rows[(name, "STORAGE")]["value"] == "0"
        assert rows[(name, "MESSAGE")]["limit"] == "-"  # no limit
    nolimit = [r for (u, t), r in rows.items() if u.startswith("nolimit") and t == "STORAGE"]
    assert nolimit and nolimit[0]["limit"] == "-"


def test_wrong_key_is_refused(dovecot_api: Dovecot) -> None:
    assert post(dovecot_api, [["user", {"userMask": ["*"]}, "t"]], key="wrong") == (401, None)


def test_new_user_logs_in_at_once_and_key_file_is_private(dovecot_api: Dovecot) -> None:
    name = f"n{secrets.token_hex(3)}"
    dovecot_api.add_user(name, "pw-new")
    conn = imaplib.IMAP4_SSL(
        dovecot_api.host,
        dovecot_api.imaps_port,
        ssl_context=ssl.create_default_context(cafile=str(dovecot_api.ca_file)),
    )
    try:
        conn.login(name, "pw-new")
    finally:
        conn.logout()
    assert dovecot_api.doveadm_key_file.stat().st_mode & 0o077 == 0
    assert dovecot_api.doveadm_key_file.read_text().strip() == dovecot_api.doveadm_api_key


def test_other_instances_have_no_doveadm_listener(dovecot: Dovecot) -> None:
    assert dovecot.doveadm_port == 0
    assert "doveadm_api_key" not in dovecot.conf_file.read_text()
