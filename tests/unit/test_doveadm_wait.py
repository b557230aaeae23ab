"""The quota of every user is one doveadm answer, sent when the last user is done: it may take
longer the more users there are (QUOTA_SECONDS_PER_USER each), whatever ``timeout`` says.

The slow doveadm is a real HTTP server on a loopback socket that answers late."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from quotawatch.config import parse_config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import account_table, doveadm_users
from quotawatch.errors import ServerTimeout
from quotawatch.mail import doveadm
from quotawatch.mail.doveadm import Doveadm
from quotawatch.service.fleet import QuotaCache

DELAY = 0.6
ROWS = [{"username": "alice", "root": "User quota", "type": "STORAGE", "value": "1",
         "limit": "2"}]  # fmt: skip


class _Slow(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(DELAY)  # doveadm works through every user before it answers
        body = json.dumps([["doveadmResponse", ROWS, "qw"]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_api() -> Iterator[DoveadmAccess]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield DoveadmAccess.model_validate({
            "url": f"http://127.0.0.1:{server.server_address[1]}/doveadm/v1",
            "api_key_env": "QW_TEST_DOVEADM_KEY", "allow_insecure_plaintext": True,
            "timeout": DELAY / 4,
        })  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()


def test_the_quota_of_many_users_may_take_longer_than_timeout(slow_api: DoveadmAccess) -> None:
    client = Doveadm(slow_api, SecretStr("key"))
    with pytest.raises(ServerTimeout, match=f"no answer within {DELAY / 4:g}s"):
        client.quotas()  # nobody said how many users: the configured timeout
    enough = int(2 * DELAY / doveadm.QUOTA_SECONDS_PER_USER)
    assert client.quotas(enough)["alice"][0].usage == 1024
    with pytest.raises(ServerTimeout):  # any other command keeps the configured timeout
        client.users()


def test_the_daemon_tells_the_cache_how_many_accounts_read_each_doveadm(
    slow_api: DoveadmAccess,
) -> None:
    api = slow_api.model_dump(mode="json", exclude_unset=True)
    template = {"host": "h", "username": "{user}*admin", "password_env": "P",
                "quota_source": "doveadm", "doveadm": api}  # fmt: skip
    users = [f"u{i}" for i in range(int(2 * DELAY / doveadm.QUOTA_SECONDS_PER_USER))]
    config = parse_config({
        "accounts": [{"name": "boss", "host": "h", "username": "boss", "password_env": "P"},
                     {**template, "name": "solo", "username": "solo"}],
        "account_sources": [{"usernames_file": "u.txt", "template": template},
                            {"usernames_file": "v.txt", "template": {**template,
                                                                     "quota_source": "imap"}}],
    })  # fmt: skip
    table = account_table(config, "<config>", {0: users, 1: ["x1", "x2"]})
    key = slow_api.model_dump_json()
    assert doveadm_users(table) == {key: len(users) + 1}  # the source's and "solo"
    assert doveadm_users(dict(table.items())) == {key: len(users) + 1}

    cache = QuotaCache(
        timedelta(minutes=5), doveadm_factory=lambda a, _s: Doveadm(a, SecretStr("k"))
    )
    cache.expect(doveadm_users(table))
    assert cache.get(slow_api, SecretCache())["alice"][0].limit == 2048
