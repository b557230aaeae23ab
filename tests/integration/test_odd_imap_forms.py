"""A real IMAP peer over a socket that answers a check, a plan and a cleanup in forms RFC 3501
allows but Dovecot never sends (sandbox/oddimap.py): they work, exactly; a FETCH the reader
cannot place fails the account with reason ``protocol``, never "no messages"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.cli import main
from quotawatch.config import load_config
from quotawatch.config.sources import all_accounts
from quotawatch.retention.audit import AuditLog
from sandbox.oddimap import OddImapServer
from tests.integration.test_retention import run
from tests.support import secret_file, write_config

NOW = datetime.now(UTC)
RULES = {"trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"}}


def mail(n: int) -> bytes:
    return (
        f"From: s{n}@example.org\r\nSubject: odd {n}\r\nMessage-ID: <t{n}@odd>\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody {n}\r\n"
    ).encode()


def mailbox() -> dict[str, list[tuple[bytes, datetime, set[bytes]]]]:
    """INBOX: one message; Trash: UIDs 1-3 forty days old, 4-5 two days old."""
    ages = [40, 40, 40, 2, 2]
    return {
        "INBOX": [(mail(0), NOW - timedelta(days=1), set())],
        "Trash": [(mail(n), NOW - timedelta(days=d), {b"\\Seen"}) for n, d in enumerate(ages, 1)],
    }


@pytest.fixture
def odd(request: pytest.FixtureRequest) -> Iterator[OddImapServer]:
    options: dict[str, Any] = getattr(request, "param", {})
    with OddImapServer(mailbox(), **options) as server:
        yield server


def configure(server: OddImapServer, tmp_path: Path) -> Path:
    acct = {"name": "odd", "host": server.host, "port": server.port, "tls": "none",
            "allow_insecure_plaintext": True, "username": "someone", "rules": ["trash-30d"],
            "password_file": str(secret_file(tmp_path / "secrets", "odd", "pw")),
            "max_delete_fraction": "100%", "connect_timeout": 5, "timeout": 10}  # fmt: skip
    return write_config(tmp_path, [acct], rules=RULES)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--json"])
    (account,) = json.loads(capsys.readouterr().out)["accounts"]
    return code, account


BASE = b"IMAP4rev1 LITERAL+ UIDPLUS QUOTA SPECIAL-USE"


@pytest.mark.parametrize(
    "odd",
    [{}, {"capabilities": BASE + b" STATUS=SIZE"}, {"capabilities": BASE}],
    indirect=True,
    ids=["list-status", "status-size", "sizes-by-fetch"],
)
def test_check_plan_and_cleanup_read_every_form_right(
    odd: OddImapServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder sizes come from LIST-STATUS, from STATUS per folder, or summed from a UID
    FETCH of RFC822.SIZE, depending on the capabilities: each path reads the odd forms."""
    path = str(configure(odd, tmp_path))
    sizes = {name: sum(len(m[0]) for m in ms) for name, ms in mailbox().items()}

    code, checked = cli(capsys, "check", "-c", path)
    assert code == 0 and checked["ok"], checked
    folders = {
        f["name"]: (f["messages"], f.get("size_bytes", f.get("bytes"))) for f in checked["folders"]
    }
    assert folders == {"INBOX": (1, sizes["INBOX"]), "Trash": (5, sizes["Trash"])}, (
        "LIST with a literal name, a lower-case inbox and extended items; STATUS in any order; "
        "the \\Noselect folder left out"
    )

    code, planned = cli(capsys, "plan", "-c", path)
    assert code == 0 and planned["ok"], planned
    (action,) = planned["actions"]
    assert (action["folder"], action["uids"]) == ("Trash", [1, 2, 3])

    code, cleaned = cli(capsys, "cleanup", "--apply", "-c", path)
    assert code == 0 and cleaned["cleanup"]["ok"], cleaned
    assert cleaned["cleanup"]["messages"] == 3
    assert odd.uids("Trash") == [4, 5] and odd.uids("INBOX") == [1]
    entries = [e for e in AuditLog(tmp_path / "state" / "audit.jsonl").entries()
               if e["status"] == "done"]  # fmt: skip
    assert sorted((e["uid"], e["message_id"]) for e in entries) == [
        (1, "<t1@odd>"),
        (2, "<t2@odd>"),
        (3, "<t3@odd>"),
    ], "the quoted header field name and the INTERNALDATE literal were read"
    assert all(e["internaldate"] is not None for e in entries)


@pytest.mark.parametrize("odd", [{"flag_on_store": 2}], indirect=True)
def test_a_message_flagged_after_its_mark_is_unmarked_and_named_so(
    odd: OddImapServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another client flags UID 2 right after quotawatch marks it: the lower-case non-silent
    STORE answer (``* 2 fetch (flags (\\seen) uid 2)``) is read, and the audit says why."""
    path = str(configure(odd, tmp_path))
    code, cleaned = cli(capsys, "cleanup", "--apply", "-c", path)
    assert code == 1, "fewer removed than planned"
    assert cleaned["cleanup"]["messages"] == 2
    assert odd.uids("Trash") == [2, 4, 5]
    assert {f.upper() for f in odd.flags("Trash", 2)} == {b"\\SEEN", b"\\FLAGGED"}
    entries = AuditLog(tmp_path / "state" / "audit.jsonl").entries()
    (kept,) = [e for e in entries if e["status"] == "kept"]
    assert kept["uid"] == 2 and "the mark was taken off again" in kept["why"], kept


@pytest.mark.parametrize(
    "odd", [{"unplaceable": "no-uid"}, {"unplaceable": "flags-only"}], indirect=True,
    ids=["no-uid", "flags-only"],
)  # fmt: skip
def test_a_fetch_the_reader_cannot_place_fails_the_account(
    odd: OddImapServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configure(odd, tmp_path)
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    plan, result = run(config, account, apply=True)
    assert plan.reason == "protocol" and not plan.ok, (plan.reason, plan.error)
    assert plan.actions == () and (result is None or result.messages == 0), result
    assert odd.uids("Trash") == [1, 2, 3, 4, 5]
    assert not any(b"STORE" in c.upper() or b"EXPUNGE" in c.upper() for c in odd.commands)

    code, cleaned = cli(capsys, "cleanup", "--apply", "-c", str(path))
    assert code == 1 and not cleaned["ok"] and cleaned["actions"] == [], cleaned
    assert cleaned["error"], "an error, never a silent 'no messages'"
    assert odd.uids("Trash") == [1, 2, 3, 4, 5]
