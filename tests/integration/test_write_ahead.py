"""The record before the deed, against the real Dovecot: unwritable journals touch nothing, lost
replies are audited uncertain and reconciled, and a shortfall is reported and exits 1."""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.cli import main
from quotawatch.config import Config
from quotawatch.config.secrets import SecretCache
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.snapshot import snapshot
from quotawatch.output import render_plans
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.executor import execute
from quotawatch.retention.rules import plan_account
from quotawatch.service.jobs import run_account
from quotawatch.state import State
from tests.integration.test_retention import NOW, audited, deliver, raw, run, setup, uids_in


def all_lines(config: Config) -> list[dict[str, Any]]:
    return list(AuditLog(config.state_dir / "audit.jsonl").entries())


def done_once(config: Config, uids: list[int]) -> None:
    """Each of ``uids`` is audited ``done`` exactly once, nothing else is ``done``."""
    done = Counter(e["uid"] for e in all_lines(config) if e["status"] == "done")
    assert done == Counter(uids), done


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_under_the_audit_log_touches_nothing(tmp_path: Path, user: Any) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 6)
    config, account, path = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    log = config.state_dir / "audit.jsonl"
    log.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk (also as root)
    state = State(config.state_dir)
    try:
        job = run_account(account, config, state, SecretCache(), cleanup=True, now=NOW)
    finally:
        state.close()
    assert job.cleanup is not None and not job.cleanup.ok and job.cleanup.messages == 0
    assert job.cleanup.reason == "state" and ("state", job.cleanup.errors[0]) in job.failures
    assert "No space left on device" in job.cleanup.errors[0]
    assert uids_in(user, "Trash") == trash, "nothing is touched when the intent cannot be written"
    with raw(user) as c:
        c.select_folder("Trash", readonly=True)
        assert c.search(["DELETED"]) == []
    assert main(["cleanup", "--config", str(path), "--apply"]) == 1
    assert uids_in(user, "Trash") == trash
    log.unlink()
    _plan, result = run(config, account, apply=True)
    assert result is not None and result.ok, result.errors
    assert uids_in(user, "Trash") == []
    done_once(config, trash)


def test_an_unwritable_journal_touches_nothing(tmp_path: Path, user: Any) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 4)
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "journal").write_text("a file where the journal directory belongs\n")
    _plan, result = run(config, account, apply=True)
    assert result is not None and result.reason == "state" and result.messages == 0
    assert uids_in(user, "Trash") == trash
    (config.state_dir / "journal").unlink()
    _plan, result = run(config, account, apply=True)
    assert result is not None and result.ok and uids_in(user, "Trash") == []
    done_once(config, trash)


@pytest.mark.parametrize("apply", [False, True], ids=["fetched-per-batch", "read-with-the-plan"])
def test_fewer_removed_than_planned_says_why_and_fails(
    tmp_path: Path, user: Any, apply: bool
) -> None:
    """Also when the audit's metadata was read with the plan (``apply``): then the answer to the
    conditional STORE tells which planned messages are gone."""
    trash = deliver(user, "Trash", [(40, "S")] * 6)
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    session = ImapSession.connect(account, SecretStr(user.password))
    state = State(config.state_dir)
    try:
        snap = snapshot(session, NOW)
        plan = plan_account(session, account, config.rules, snap, state, NOW, apply=apply)
        assert bool(plan.actions[0].metas) is apply
        with raw(user) as c:  # another client deletes two planned messages meanwhile
            c.select_folder("Trash")
            c.delete_messages(trash[:2])
            c.uid_expunge(trash[:2])
        audit = AuditLog(config.state_dir / "audit.jsonl")
        result = execute(session, plan, account, config.rules, audit, NOW)
    finally:
        session.close()
        state.close()
    assert not result.ok and result.messages == 4
    assert result.errors == (
        f"{account.name}: trash-30d: deleted 4 of 6 planned messages in Trash "
        "(2 no longer on the server when its batch began)",
    )
    kept = [e for e in audited(config) if e["status"] == "kept"]
    assert sorted(e["uid"] for e in kept) == trash[:2]
    assert {e["why"] for e in kept} == {"no longer on the server when its batch began"}
    done_once(config, trash[2:])
    text = render_plans([(plan, result)], applied=True)
    assert "done: delete 4 of 6 planned from Trash" in text and "ERROR: " in text


def test_link_lost_after_store_is_reconciled_next_run(tmp_path: Path, user: Any) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 6)
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    session = ImapSession.connect(account, SecretStr(user.password))
    real_run = session._run

    def cut_before_expunge(name: str, line: bytes, *want: bytes, **kw: Any) -> Any:
        if line.startswith(b"UID EXPUNGE"):  # the STORE went through; then the link breaks
            # on our side, so the server never sees UID EXPUNGE (a server-side kick is a signal
            # that may arrive only after the server has run the command)
            session.client._imap.sock.shutdown(socket.SHUT_RDWR)
        return real_run(name, line, *want, **kw)

    session._run = cut_before_expunge  # type: ignore[method-assign]
    state = State(config.state_dir)
    try:
        plan = plan_account(session, account, config.rules, snapshot(session, NOW), state, NOW)
        audit = AuditLog(config.state_dir / "audit.jsonl")
        result = execute(session, plan, account, config.rules, audit, NOW)
    finally:
        session.close()
        state.close()
    assert not result.ok and result.unconfirmed == 1 and result.messages == 0
    assert result.done[0].uncertain == 6
    assert sorted(e["uid"] for e in audited(config) if e["status"] == "uncertain") == trash
    with raw(user) as c:  # all six carry \Deleted; the user flags one meanwhile
        c.select_folder("Trash")
        assert sorted(c.search(["DELETED"])) == trash
        c.add_flags([trash[0]], [b"\\Flagged"])
    _plan, result2 = run(config, account, apply=True)
    assert result2 is not None and result2.ok, result2.errors
    assert uids_in(user, "Trash") == [trash[0]], "only journaled, still eligible UIDs go"
    with raw(user) as c:
        c.select_folder("Trash", readonly=True)
        assert c.search(["DELETED"]) == [], "the flagged message is left as the user left it"
    done_once(config, trash[1:])
    (kept,) = [e for e in audited(config) if e["status"] == "kept"]
    assert kept["uid"] == trash[0] and "Deleted taken off" in kept["why"]
    assert not list((config.state_dir / "journal").glob("*")), "nothing left open"
