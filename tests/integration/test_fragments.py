"""Answers split one byte per packet parse exactly like whole ones: check and plan through a fragmenting proxy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.cli import main
from sandbox.faultproxy import FaultProxy
from tests.support import imap_account, write_config

NOW = datetime.now(UTC)
RULES = {
    "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"},
    "junk-sent-14d": {"folders": ["\\Junk"], "older_than": "14d", "age": "sent"},
}


def message(i: int, sent: datetime) -> bytes:
    return (
        f"From: s{i}@example.org\r\nTo: u@example.org\r\nSubject: m {i}\r\n"
        f"Message-ID: <{i}@example.org>\r\nDate: {sent:%a, %d %b %Y %H:%M:%S +0000}\r\n\r\n"
        f"body {i}\r\n"
    ).encode()


def fill(user: Any) -> None:
    for folder, ages in {"Trash": [40, 35, 5, 2], "Junk": [20, 16, 3], "INBOX": [1, 50]}.items():
        items = [(message(i, NOW - timedelta(days=d)), NOW - timedelta(days=d), "S")
                 for i, d in enumerate(ages)]  # fmt: skip
        user.dovecot.deliver_bulk(user.name, folder, items)


def run(capsys: Any, config: Path, *command: str) -> dict[str, Any]:
    main([*command, "--json", "--config", str(config)])
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def results(tmp_path: Path, user: Any, capsys: Any, imap_port: int, pop3_port: int) -> Any:
    dovecot = user.dovecot
    plain = {"tls": "none", "allow_insecure_plaintext": True}
    imap = imap_account(dovecot, "imap", user.name, user.password, tmp_path, port=imap_port,
                        rules=list(RULES), max_delete_fraction="90%", **plain)  # fmt: skip
    pop3 = imap_account(dovecot, "pop3", user.name, user.password, tmp_path, port=pop3_port,
                        protocol="pop3", quota="10MB", **plain)  # fmt: skip
    config = write_config(tmp_path, [imap, pop3], rules=RULES)
    return run(capsys, config, "check"), run(capsys, config, "plan")


def test_check_and_plan_through_a_fragmenting_proxy_give_the_same_json(
    tmp_path: Path, user: Any, capsys: Any
) -> None:
    fill(user)
    dovecot = user.dovecot
    whole = results(tmp_path / "whole", user, capsys, dovecot.imap_port, dovecot.pop3_port)
    with (
        FaultProxy(dovecot.host, dovecot.imap_port, fragment=True, connection=None) as imap,
        FaultProxy(
            dovecot.host, dovecot.pop3_port, protocol="pop3", fragment=True, connection=None
        ) as pop3,
    ):
        split = results(tmp_path / "split", user, capsys, imap.port, pop3.port)
        carried = imap.connections + pop3.connections
        assert carried and all(c.faulted and c.bytes_down > 100 for c in carried)
    assert split == whole
    check, plan = whole
    assert all(a["ok"] for a in check["accounts"]), check
    (imap_plan,) = [a for a in plan["accounts"] if a["name"] == "imap"]
    assert imap_plan["ok"] and sorted(a["folder"] for a in imap_plan["actions"]) == [
        "Junk",
        "Trash",
    ]
