"""Races against the real sandbox Dovecot: a message that changes after the plan is never removed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import imapclient
import pytest
from pydantic import SecretStr

from quotawatch.config import Account, Config
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.snapshot import snapshot
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.executor import CleanupResult, execute
from quotawatch.retention.planner import Plan
from quotawatch.retention.rules import plan_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot
from tests.integration import test_retention as base

FLAGGED, SEEN, DELETED = imapclient.FLAGGED, imapclient.SEEN, imapclient.DELETED


@pytest.fixture(params=["condstore", "noqresync", "plain"])
def any_user(request: pytest.FixtureRequest, user: Any) -> Any:
    """The same test with the default Dovecot (CONDSTORE and QRESYNC), with one that hides
    QRESYNC (what went is searched for, not read from VANISHED) and with one that hides both:
    there protections are re-checked by search alone."""
    if request.param != "condstore":
        server: Dovecot = request.getfixturevalue(f"dovecot_{request.param}")
        server.add_user(user.name, user.password)
        user = type(user)(user.name, user.password, server)
    caps = base.session_caps(user)
    assert ("CONDSTORE" in caps) is (request.param != "plain"), caps
    assert ("QRESYNC" in caps) is (request.param == "condstore"), caps
    return user


def condstore(user: Any) -> bool:
    return "CONDSTORE" in base.session_caps(user)


def flags(user: Any, folder: str, uid: int) -> set[bytes]:
    with base.raw(user) as c:
        c.select_folder(folder, readonly=True)
        return set(c.get_flags([uid])[uid])


def meddle(user: Any, folder: str, uids: Sequence[int], add: Sequence[bytes] = (),
           remove: Sequence[bytes] = ()) -> None:  # fmt: skip
    """What the user does in a mail client meanwhile: a second, independent IMAP session."""
    with base.raw(user) as other:
        other.select_folder(folder)
        if add:
            other.add_flags(list(uids), list(add))
        if remove:
            other.remove_flags(list(uids), list(remove))


def plan_then_apply(
    config: Config,
    account: Account,
    user: Any,
    between: Callable[[Plan], None],
    before_expunge: Callable[[str, Sequence[int]], None] | None = None,
) -> tuple[Plan, CleanupResult]:
    """Plan on one session, let ``between`` act, then apply that plan on the same session."""
    session = ImapSession.connect(account, SecretStr(user.password))
    session.before_expunge = before_expunge
    state = State(config.state_dir)
    now = datetime.now(base.NOW.tzinfo)
    try:
        plan = plan_account(session, account, config.rules, snapshot(session, now), state, now)
        between(plan)
        audit = AuditLog(config.state_dir / "audit.jsonl")
        return plan, execute(session, plan, account, config.rules, audit, now)
    finally:
        session.close()
        state.close()


def kept_in_audit(config: Config) -> dict[int, str]:
    """The planned messages audited as left on the server on purpose, with why."""
    return {e["uid"]: e["why"] for e in base.audited(config) if e["status"] == "kept"}


# ---------------------------------------------------------------------------------------- tests
def test_a_message_flagged_between_plan_and_delete_survives(tmp_path: Path, any_user: Any) -> None:
    user = any_user
    trash = base.deliver(user, "Trash", [(40, "S")] * 5)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = plan_then_apply(
        config, account, user, lambda plan: meddle(user, "Trash", [trash[1]], add=[FLAGGED])
    )
    assert base.planned(plan) == trash
    assert base.uids_in(user, "Trash") == [trash[1]]
    assert flags(user, "Trash", trash[1]) == {FLAGGED, SEEN}  # as the user left it
    assert result.messages == 4 and list(kept_in_audit(config)) == [trash[1]]
    # with CONDSTORE the conditional STORE leaves it out; without, the search before the STORE
    why = "changed since the plan (the server" if condstore(user) else "flagged, unseen"
    assert f"deleted 4 of 5 planned messages in Trash (1 {why}" in result.errors[0]
    assert sorted(e["uid"] for e in base.audited(config) if e["status"] == "done") == sorted(
        set(trash) - {trash[1]}
    )


def test_a_message_flagged_between_mark_and_expunge_is_unmarked_and_survives(
    tmp_path: Path, any_user: Any
) -> None:
    user = any_user
    trash = base.deliver(user, "Trash", [(40, "S")] * 4)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    seen: list[list[int]] = []

    def flag_it(folder: str, uids: Sequence[int]) -> None:  # the user acts at that very moment
        seen.append(list(uids))
        assert DELETED in flags(user, folder, trash[2])  # marked by quotawatch, not expunged yet
        meddle(user, folder, [trash[2]], add=[FLAGGED])

    _plan, result = plan_then_apply(config, account, user, lambda plan: None, flag_it)
    assert seen == [trash]
    assert base.uids_in(user, "Trash") == [trash[2]]
    assert flags(user, "Trash", trash[2]) == {FLAGGED, SEEN}  # \Deleted taken off again
    assert result.messages == 3 and "taken off again" in kept_in_audit(config)[trash[2]]


def test_a_message_read_state_changed_after_the_plan_survives_with_condstore(
    tmp_path: Path, any_user: Any
) -> None:
    """In Trash unseen mail is not protected; only CONDSTORE can tell that it changed since the
    plan (UNCHANGEDSINCE), and then it is left alone too. Without CONDSTORE it goes, as planned."""
    user = any_user
    trash = base.deliver(user, "Trash", [(40, "S")] * 3)
    config, account, _ = base.setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = plan_then_apply(
        config, account, user, lambda plan: meddle(user, "Trash", [trash[0]], remove=[SEEN])
    )
    assert base.planned(plan) == trash
    if "CONDSTORE" in base.session_caps(user):
        assert base.uids_in(user, "Trash") == [trash[0]] and flags(user, "Trash", trash[0]) == set()
        assert "MODIFIED" in kept_in_audit(config)[trash[0]]
    else:
        assert base.uids_in(user, "Trash") == [] and result.messages == 3


def test_move_leaves_a_message_flagged_after_the_plan(tmp_path: Path, any_user: Any) -> None:
    user = any_user
    junk = base.deliver(user, "Junk", [(40, "S")] * 4)
    rules = {"junk-to-trash": {"folders": ["Junk"], "older_than": "30d", "age": "received",
                               "action": "move:\\Trash"}}  # fmt: skip
    config, account, _ = base.setup(
        tmp_path, user, ["junk-to-trash"], rules, max_delete_fraction=1.0
    )
    plan, result = plan_then_apply(
        config, account, user, lambda plan: meddle(user, "Junk", [junk[3]], add=[FLAGGED])
    )
    assert base.planned(plan) == junk
    assert base.uids_in(user, "Junk") == [junk[3]] and len(base.uids_in(user, "Trash")) == 3
    assert flags(user, "Junk", junk[3]) == {FLAGGED, SEEN}
    assert result.messages == 3 and list(kept_in_audit(config)) == [junk[3]]


def test_archive_leaves_a_message_flagged_after_the_plan(tmp_path: Path, any_user: Any) -> None:
    user = any_user
    uids = base.deliver(user, "Projekte/Ältere", [(40, "S")] * 3)
    config, account, _ = base.setup(
        tmp_path, user, ["arch"], base.archive_rule(tmp_path / "ar"), max_delete_fraction=1.0
    )
    plan, result = plan_then_apply(
        config, account, user,
        lambda plan: meddle(user, "Projekte/Ältere", [uids[0]], add=[FLAGGED]),
    )  # fmt: skip
    assert base.planned(plan) == uids
    assert base.uids_in(user, "Projekte/Ältere") == [uids[0]]
    assert flags(user, "Projekte/Ältere", uids[0]) == {FLAGGED, SEEN}
    assert result.messages == 2 and list(kept_in_audit(config)) == [uids[0]]
