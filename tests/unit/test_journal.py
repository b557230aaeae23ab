"""The cleanup journal on disk and the pure reconciliation decision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from quotawatch.errors import StateError
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.journal import Journal
from quotawatch.retention.reconcile import decide


def intent(uid: int, folder: str = "Trash", uidvalidity: int | None = 7) -> dict[str, Any]:
    return {"account": "a", "folder": folder, "uidvalidity": uidvalidity, "uid": uid, "size": 10}


def test_intents_stay_open_until_settled_then_the_journal_goes(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    journal = Journal(audit)
    journal.intend("a", [intent(1), intent(2), intent(3)])
    journal.intend("b", [intent(1)])
    assert [e["uid"] for e in journal.open_intents("a")] == [1, 2, 3]
    journal.intend("a", [intent(2)])  # a later run journals it again: still one intent
    journal.settle("a", [{**intent(1), "status": "done"}, {**intent(2), "status": "done"}])
    assert [e["uid"] for e in journal.open_intents("a")] == [3]
    journal.settle("a", [{**intent(3), "status": "kept", "why": "x"}])
    assert journal.open_intents("a") == [] and not journal.path("a").exists()
    assert [e["uid"] for e in journal.open_intents("b")] == [1], "accounts are apart"
    statuses = [(e["account"], e["uid"], e["status"]) for e in audit.entries()]
    assert statuses == [
        ("a", 1, "intent"), ("a", 2, "intent"), ("a", 3, "intent"), ("a", 1, "intent"),
        ("a", 2, "intent"), ("a", 1, "done"), ("a", 2, "done"), ("a", 3, "kept"),
    ]  # fmt: skip


def test_a_torn_last_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    journal = Journal(AuditLog(tmp_path / "audit.jsonl"))
    journal.intend("a", [intent(1)])
    with journal.path("a").open("a") as fh:
        fh.write('{"open": {"folder": "Tr')  # a crash in the middle of a write
    journal.intend("a", [intent(2)])
    assert [e["uid"] for e in journal.open_intents("a")] == [1, 2]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").symlink_to("/dev/full")
    journal = Journal(AuditLog(tmp_path / "audit.jsonl"))
    with pytest.raises(StateError) as err:
        journal.intend("a", [intent(1)])
    assert err.value.reason == "state" and "nothing changed on the server" in str(err.value)
    assert journal.open_intents("a") == [], "the audit log is written first"


def test_decide_gone_planned_marked_and_left() -> None:
    intents = [intent(u) for u in (1, 2, 3, 4)]
    k = [("Trash", 7, str(u)) for u in (1, 2, 3, 4)]
    s = decide(intents, present={k[1], k[2], k[3]}, marked={k[1], k[2]}, planned={k[1]})
    assert [e["uid"] for e in s.done] == [1], "gone: the earlier removal happened"
    assert [e["uid"] for e in s.again] == [2], "marked and eligible: removed by this run"
    assert [e["uid"] for e in s.unmark] == [3], "marked, not eligible: \\Deleted comes off"
    assert [e["uid"] for e in s.kept] == [4]


def test_decide_pop3_uidls_have_no_uidvalidity() -> None:
    intents = [intent(u, "INBOX", None) for u in (1, 2)]
    s = decide(intents, present={("INBOX", None, "2")}, marked=set(), planned=set())
    assert [e["uid"] for e in s.done] == [1] and [e["uid"] for e in s.kept] == [2]


def test_an_outcome_line_is_exactly_the_encoded_outcome(tmp_path: Path) -> None:
    """The done line reuses the intent's encoding with the status replaced: the same bytes as
    encoding the outcome, also when a value spells the status item; any other change re-encodes."""
    from quotawatch.retention.audit import encode

    audit = AuditLog(tmp_path / "audit.jsonl")
    journal = Journal(audit)
    odd = {**intent(1), "message_id": '<"status": "intent"@x>', "internaldate": None}
    outcomes = [
        {**odd, "status": "done"},
        {**intent(2), "status": "done", "size": 11},  # differs: encoded afresh
        {**intent(3), "status": "kept", "why": 'a "quoted" why'},
        {**intent(4), "status": "uncertain"},
    ]
    journal.intend("a", [odd, intent(2), intent(3), intent(4)])
    journal.settle("a", outcomes)
    lines = audit.path.read_text(encoding="utf-8").splitlines()[4:]
    assert lines == [encode(o) for o in outcomes]
