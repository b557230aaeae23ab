"""Retention against the real sandbox Dovecot: exact deletes, protections, age semantics, safety stops."""

from __future__ import annotations

import json
import shutil
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import imapclient
import pytest
from pydantic import SecretStr

from quotawatch.cli import main
from quotawatch.config import Account, Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.snapshot import snapshot
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.executor import execute
from quotawatch.retention.planner import Plan
from quotawatch.retention.results import CleanupResult
from quotawatch.retention.rules import plan_account
from quotawatch.service.jobs import check_account, cleanup_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot, make_base_dir
from tests.support import imap_account, write_config

NOW = datetime.now(UTC)
RULES: dict[str, Any] = {
    "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"},
    "junk-14d": {"folders": ["\\Junk"], "older_than": "14d", "age": "received"},
}


def msg(i: int, folder: str = "x", size: int = 600) -> bytes:
    head = (
        f"From: s{i}@example.org\r\nTo: u@example.org\r\nSubject: {folder} {i}\r\n"
        f"Message-ID: <{i}.{folder}@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    ).encode()
    return head + b"x" * max(size - len(head) - 2, 0) + b"\r\n"


def deliver(
    user: Any, folder: str, ages_flags: list[tuple[float, str]], size: int = 600
) -> list[int]:
    """Deliver messages aged ``days`` with Maildir flags; return their UIDs (iteration order)."""
    before = set(uids_in(user, folder)) if folder in folder_names(user) else set()
    items = [
        (msg(i, folder.replace("/", "_"), size), NOW - timedelta(days=d), f)
        for i, (d, f) in enumerate(ages_flags)
    ]
    user.dovecot.deliver_bulk(user.name, folder, items)
    return sorted(set(uids_in(user, folder)) - before)


@contextmanager
def raw(user: Any) -> Iterator[imapclient.IMAPClient]:
    """A second, independent session, for looking and meddling."""
    ctx = ssl.create_default_context(cafile=str(user.dovecot.ca_file))
    client = imapclient.IMAPClient(user.dovecot.host, port=user.dovecot.imaps_port, ssl_context=ctx)
    client.login(user.name, user.password)
    try:
        yield client
    finally:
        client.logout()


def uids_in(user: Any, folder: str) -> list[int]:
    with raw(user) as c:
        c.select_folder(folder, readonly=True)
        return sorted(c.search(["ALL"]))


def folder_names(user: Any) -> list[str]:
    with raw(user) as c:
        return [str(name) for _f, _d, name in c.list_folders()]


def setup(
    tmp_path: Path,
    user: Any,
    rules: list[str],
    extra_rules: dict[str, Any] | None = None,
    **acct: Any,
) -> tuple[Config, Account, Path]:
    account = imap_account(
        user.dovecot, user.name, user.name, user.password, tmp_path, rules=rules, **acct
    )
    path = write_config(tmp_path, [account], rules={**RULES, **(extra_rules or {})})
    config = load_config(path)
    return config, all_accounts(config, str(path))[0], path


def run(
    config: Config, account: Account, *, apply: bool, now: datetime = NOW, progress: Any = None
) -> tuple[Plan, CleanupResult | None]:
    state = State(config.state_dir)
    try:
        return cleanup_account(
            account, config, state, AuditLog(config.state_dir / "audit.jsonl"), SecretCache(),
            apply=apply, now=now, progress=progress,
        )  # fmt: skip
    finally:
        state.close()


def run_later(
    config: Config, account: Account, user: Any, now: datetime, *, apply: bool = True
) -> tuple[Plan, CleanupResult | None]:
    """Plan (and apply) at a ``now`` weeks ahead: the clock check is told to allow that much,
    as these tests age mail by moving ``now`` rather than the mail (SAVEDATE cannot be set)."""
    session = ImapSession.connect(account, SecretStr(user.password))
    state = State(config.state_dir)
    try:
        rules = {n: config.rules[n] for n in account.rules}
        snap = snapshot(session, now)
        plan = plan_account(
            session, account, rules, snap, state, now, clock_slack=timedelta(days=40)
        )
        audit = AuditLog(config.state_dir / "audit.jsonl")
        return plan, execute(session, plan, account, rules, audit, now) if apply else None
    finally:
        session.close()
        state.close()


def audited(config: Config) -> list[dict[str, Any]]:
    """The audit log without the journal's ``intent`` lines."""
    entries = AuditLog(config.state_dir / "audit.jsonl").entries()
    return [e for e in entries if e["status"] != "intent"]


def planned(plan: Plan, folder: str | None = None) -> list[int | str]:
    return sorted(u for a in plan.actions if folder in (None, a.folder) for u in a.uids)


# ---------------------------------------------------------------------------------------- tests
def test_exactly_the_planned_uids_go_and_everything_else_stays(
    tmp_path: Path, user: Any, capsys: Any
) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 6 + [(5, "S")] * 3 + [(90, "FS")] * 2 + [(31, "")])
    junk = deliver(user, "Junk", [(20, "")] * 4 + [(13, "")] * 4)
    inbox = deliver(user, "INBOX", [(400, "S")] * 5)
    config, account, path = setup(
        tmp_path, user, ["trash-30d", "junk-14d"], max_delete_fraction=0.9
    )

    code = main(["plan", "--config", str(path), "--json"])
    shown = json.loads(capsys.readouterr().out)["accounts"][0]
    assert code == 0 and shown["ok"] and shown["error"] is None
    by_folder = {a["folder"]: a for a in shown["actions"]}
    assert by_folder["Trash"]["uids"] == trash[:6] + trash[11:]  # not the young, not the flagged
    assert by_folder["Junk"]["uids"] == junk[:4]
    assert uids_in(user, "Trash") == trash  # plan changed nothing

    plan, result = run(config, account, apply=True)
    assert result is not None and result.ok, result
    assert planned(plan, "Trash") == by_folder["Trash"]["uids"]
    assert uids_in(user, "Trash") == trash[6:11]
    assert uids_in(user, "Junk") == junk[4:]
    assert uids_in(user, "INBOX") == inbox
    log = audited(config)
    assert sorted((e["folder"], e["uid"]) for e in log) == sorted(
        [("Trash", u) for u in by_folder["Trash"]["uids"]] + [("Junk", u) for u in junk[:4]]
    )
    entry = log[0]
    assert entry["account"] == user.name and entry["status"] == "done" and entry["size"] > 500
    assert entry["message_id"].endswith("@example.org>") and entry["internaldate"]
    assert {e["uidvalidity"] for e in log} == {a["uidvalidity"] for a in shown["actions"]}
    assert result.freed_bytes is not None
    assert abs(result.freed_bytes - plan.pending_bytes) <= 2048  # quota is reported in KiB
    # the next run has nothing left to do
    again, _ = run(config, account, apply=False)
    assert again.actions == ()


def test_a_message_another_client_marked_deleted_survives(tmp_path: Path, user: Any) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 3 + [(2, "S")] * 2)
    with raw(user) as other:
        other.select_folder("Trash")
        other.add_flags([trash[3]], [imapclient.DELETED])  # young: no rule selects it
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = run(config, account, apply=True)
    assert result is not None and result.ok
    assert planned(plan) == trash[:3]
    assert uids_in(user, "Trash") == trash[3:]
    with raw(user) as c:
        c.select_folder("Trash", readonly=True)
        assert imapclient.DELETED in c.get_flags([trash[3]])[trash[3]]


def test_saved_age_with_savedate_is_time_in_folder(tmp_path: Path, user: Any) -> None:
    assert "SAVEDATE" in session_caps(user)
    old = deliver(user, "INBOX", [(400, "S")] * 4)
    with raw(user) as c:
        c.select_folder("INBOX")
        c.move(old, "Trash")  # received 400 days ago, in Trash since today
    rules = {"trash-saved": {"folders": ["\\Trash"], "older_than": "30d"}}
    config, account, _ = setup(tmp_path, user, ["trash-saved"], rules, max_delete_fraction=1.0)
    plan, _ = run(config, account, apply=False)
    assert plan.ok and plan.actions == ()  # 0 days in Trash
    later, result = run_later(config, account, user, NOW + timedelta(days=31))
    assert len(planned(later)) == 4 and result is not None and result.ok
    assert uids_in(user, "Trash") == []


def session_caps(user: Any) -> set[str]:
    with raw(user) as c:
        return {x.decode().upper() for x in c.capabilities()}


@pytest.fixture
def nosize_user(dovecot_nosize: Any, user: Any) -> Any:
    dovecot_nosize.add_user(user.name, user.password)
    return type(user)(user.name, user.password, dovecot_nosize)


def test_saved_age_without_savedate_uses_first_seen_records(
    tmp_path: Path, nosize_user: Any
) -> None:
    user = nosize_user
    assert "SAVEDATE" not in session_caps(user)
    old = deliver(user, "INBOX", [(400, "S")] * 4)
    with raw(user) as c:
        c.select_folder("INBOX")
        c.move(old[:3], "Trash")
    rules = {"trash-saved": {"folders": ["\\Trash"], "older_than": "30d"}}
    config, account, _ = setup(tmp_path, user, ["trash-saved"], rules, max_delete_fraction=1.0)
    plan, _ = run(config, account, apply=False)
    assert plan.ok and plan.actions == ()  # first seen now: 0 days old
    with raw(user) as c:  # moved in later: first seen 20 days after the others
        c.select_folder("INBOX")
        c.move(old[3:], "Trash")
    run_later(config, account, user, NOW + timedelta(days=20), apply=False)
    later, result = run_later(config, account, user, NOW + timedelta(days=31))
    assert len(planned(later)) == 3 and result is not None and result.ok, (later, result)
    assert len(uids_in(user, "Trash")) == 1


def test_uidvalidity_change_between_plan_and_apply_deletes_nothing(
    tmp_path: Path, user: Any
) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 5)
    junk = deliver(user, "Junk", [(40, "S")] * 5)
    config, account, _ = setup(tmp_path, user, ["trash-30d", "junk-14d"], max_delete_fraction=1.0)
    session = ImapSession.connect(account, SecretStr(user.password))
    state = State(config.state_dir)
    try:
        plan = plan_account(session, account, config.rules, snapshot(session, NOW), state, NOW)
        assert planned(plan) == sorted(trash + junk)
        validity = next(a.uidvalidity for a in plan.actions if a.folder == "Trash")
        assert validity is not None
        user.dovecot.doveadm(
            "mailbox", "update", "-u", user.name, "--uid-validity", str(validity + 1000), "Trash"
        )
        result = execute(
            session, plan, account, config.rules, AuditLog(config.state_dir / "audit.jsonl"), NOW
        )
    finally:
        session.close()
        state.close()
    assert not result.ok and "UIDVALIDITY of Trash changed" in result.errors[0]
    assert len(uids_in(user, "Trash")) == 5  # skipped
    assert uids_in(user, "Junk") == []  # the other folder went ahead
    assert {e["folder"] for e in audited(config)} == {"Junk"}


def test_connection_cut_mid_cleanup_loses_nothing_outside_the_plan(
    tmp_path: Path, user: Any
) -> None:
    ages = [(40, "S")] * 1200 + [(3, "S")] * 300 + [(60, "FS")] * 100
    trash = deliver(user, "Trash", ages, size=300)
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    session = ImapSession.connect(account, SecretStr(user.password))
    state = State(config.state_dir)
    audit = AuditLog(config.state_dir / "audit.jsonl")
    cut = threading.Event()

    def progress(message: str) -> None:
        if not cut.is_set():  # after the first batch: kick the user's sessions server-side
            cut.set()
            user.dovecot.kill_user_sessions(user.name)

    try:
        plan = plan_account(session, account, config.rules, snapshot(session, NOW), state, NOW)
        assert planned(plan) == trash[:1200]
        result = execute(session, plan, account, config.rules, audit, NOW, progress, batch_size=200)
    finally:
        session.close()
        state.close()
    assert cut.is_set() and not result.ok and "connection" in result.errors[0].lower()
    left = set(uids_in(user, "Trash"))
    assert set(trash[1200:]) <= left  # nothing outside the plan is gone
    assert 0 < len(trash) - len(left) < 1200
    gone = set(trash) - left
    assert gone <= {e["uid"] for e in audit.entries()}  # everything gone is audited
    # the next run finishes the job
    plan2, result2 = run(config, account, apply=True)
    assert result2 is not None and result2.ok
    assert set(planned(plan2)) == left - set(trash[1200:])
    assert uids_in(user, "Trash") == trash[1200:]


def test_caps_stop_a_runaway_rule(tmp_path: Path, user: Any) -> None:
    deliver(user, "Junk", [(20, "")] * 18 + [(1, "")] * 2)
    config, account, path = setup(tmp_path, user, ["junk-14d"])  # default cap: 50% of a folder
    code = main(["cleanup", "--config", str(path), "--apply"])
    assert code == 1
    plan, result = run(config, account, apply=True)
    assert plan.error == (
        "rule junk-14d would delete 18 of 20 messages (90%) in Junk, above max_delete_fraction "
        "50%; nothing done"
    )
    assert result is not None and not result.ok and "refused" in result.errors[0]
    assert len(uids_in(user, "Junk")) == 20 and audited(config) == []
    config2, account2, _ = setup(
        tmp_path, user, ["junk-14d"], max_delete_fraction=1.0, max_delete_messages=10
    )
    plan, _ = run(config2, account2, apply=True)
    assert plan.error is not None and "max_delete_messages 10" in plan.error
    assert len(uids_in(user, "Junk")) == 20


def archive_rule(directory: Path) -> dict[str, Any]:
    return {"arch": {"folders": ["Projekte/Ältere"], "older_than": "30d", "age": "received",
                     "action": "archive", "archive_dir": str(directory / "{account}")}}  # fmt: skip


def test_archive_is_verified_before_delete_with_non_ascii_folders(
    tmp_path: Path, user: Any
) -> None:
    uids = deliver(user, "Projekte/Ältere", [(40, "S")] * 4 + [(2, "S")])
    config, account, _ = setup(
        tmp_path, user, ["arch"], archive_rule(tmp_path / "ar"), max_delete_fraction=1.0
    )
    with raw(user) as c:
        c.select_folder("Projekte/Ältere", readonly=True)
        bodies = {u: v[b"BODY[]"] for u, v in c.fetch(uids[:4], ["BODY.PEEK[]"]).items()}
    plan, result = run(config, account, apply=True)
    assert result is not None and result.ok, result
    assert planned(plan) == uids[:4]
    assert uids_in(user, "Projekte/Ältere") == uids[4:]
    stored = sorted((tmp_path / "ar" / user.name / ".Projekte.Ältere" / "new").iterdir())
    assert sorted(p.read_bytes() for p in stored) == sorted(bodies.values())
    log = audited(config)
    assert {e["folder"] for e in log} == {"Projekte/Ältere"}
    assert all(Path(e["archive_path"]).exists() for e in log)


def test_a_failed_archive_deletes_nothing(tmp_path: Path, user: Any) -> None:
    uids = deliver(user, "Projekte/Ältere", [(40, "S")] * 3)
    blocked = tmp_path / "ar"
    blocked.write_text("a file where the archive directory should be")
    config, account, _ = setup(
        tmp_path, user, ["arch"], archive_rule(blocked), max_delete_fraction=1.0
    )
    plan, result = run(config, account, apply=True)
    assert planned(plan) == uids
    assert result is not None and not result.ok and "archive" in result.errors[0]
    assert uids_in(user, "Projekte/Ältere") == uids and audited(config) == []


def test_move_rule_moves_exactly_the_planned_messages(tmp_path: Path, user: Any) -> None:
    junk = deliver(user, "Junk", [(40, "")] * 3 + [(1, "")] * 3)
    rules = {
        "junk-to-trash": {
            "folders": ["Junk"],
            "older_than": "30d",
            "age": "received",
            "action": "move:\\Trash",
        }
    }
    config, account, _ = setup(tmp_path, user, ["junk-to-trash"], rules, max_delete_fraction=1.0)
    plan, result = run(config, account, apply=True)
    assert [a.action for a in plan.actions] == ["move:Trash"]
    assert result is not None and result.ok and result.messages == 3
    assert uids_in(user, "Junk") == junk[3:] and len(uids_in(user, "Trash")) == 3
    assert {e["action"] for e in audited(config)} == {"move:Trash"}


def test_plan_and_apply_agree_through_the_cli(tmp_path: Path, user: Any, capsys: Any) -> None:
    deliver(user, "Trash", [(40, "S")] * 7 + [(3, "S")] * 8)
    deliver(user, "Entwürfe", [(40, "S")] * 2)
    extra = {"drafts": {"folders": ["Entw*"], "older_than": "30d", "age": "received"}}
    _config, _account, path = setup(
        tmp_path, user, ["trash-30d", "drafts"], extra, max_delete_fraction=1.0
    )
    assert main(["plan", "--config", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["accounts"][0]
    assert main(["cleanup", "--config", str(path)]) == 0  # without --apply: a dry run
    assert "dry run" in capsys.readouterr().out
    assert len(uids_in(user, "Trash")) == 15
    assert main(["cleanup", "--config", str(path), "--apply", "--json", "--progress"]) == 0
    captured = capsys.readouterr()
    done = json.loads(captured.out)["accounts"][0]
    assert "deleted 7 of 7 messages in Trash" in captured.err
    assert done["applied"] and done["cleanup"]["ok"] and done["cleanup"]["messages"] == 9
    config = load_config(path)
    log = {(e["folder"], e["uidvalidity"], e["uid"]) for e in audited(config)}
    plan_uids = {(a["folder"], a["uidvalidity"], u) for a in shown["actions"] for u in a["uids"]}
    assert log == plan_uids and len(log) == 9
    assert main(["plan", "--config", str(path)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_the_stored_report_after_a_cleanup_shows_the_usage_after_it(
    tmp_path: Path, user: Any
) -> None:
    """Metrics, warn --preview and the next warning read the stored report: after a cleanup it
    is the usage the cleanup left, not the reading taken before it."""
    deliver(user, "Trash", [(40, "S")] * 6 + [(3, "S")] * 4, size=20_000)
    config, account, _ = setup(tmp_path, user, ["trash-30d"], max_delete_fraction=1.0)
    plan, result = run(config, account, apply=True)
    assert result is not None and result.ok and result.messages == 6, (plan, result)
    state = State(config.state_dir)
    try:
        stored = state.last_report(account.name)
    finally:
        state.close()
    assert stored is not None
    live = check_account(account, SecretCache())
    assert live.snapshot is not None
    live_usage = {(q.resource, q.usage) for q in live.snapshot.quota}
    assert {(q["resource"], q["usage"]) for q in stored[2]["quota"]} == live_usage
    trash = {f["name"]: f["messages"] for f in stored[2]["folders"]}["Trash"]
    assert trash == 4 and stored[2]["usage_ratio"] < (plan.usage_before or 0)


@pytest.fixture(scope="module")
def dovecot_nouidplus() -> Iterator[Any]:
    """A server without UIDPLUS (MOVE still offered): quotawatch must refuse to delete."""
    base = make_base_dir("qw-nouidplus-")
    server = Dovecot(base, hide_capabilities=("UIDPLUS",), name="nouidplus")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_without_uidplus_deleting_is_refused_but_quota_and_moves_work(
    tmp_path: Path, dovecot_nouidplus: Any, user: Any
) -> None:
    dovecot_nouidplus.add_user(user.name, user.password)
    other = type(user)(user.name, user.password, dovecot_nouidplus)
    assert "UIDPLUS" not in session_caps(other) and "MOVE" in session_caps(other)
    trash = deliver(other, "Trash", [(40, "S")] * 4)
    junk = deliver(other, "Junk", [(40, "S")] * 2)
    rules = {
        "junk-to-trash": {
            "folders": ["Junk"],
            "older_than": "30d",
            "age": "received",
            "action": "move:Trash",
        }
    }
    config, account, _ = setup(
        tmp_path, other, ["trash-30d", "junk-to-trash"], rules, max_delete_fraction=1.0
    )
    plan, result = run(config, account, apply=True)
    assert plan.ok and plan.usage_before is not None and planned(plan, "Trash") == trash
    assert result is not None and not result.ok
    assert "server lacks UIDPLUS" in result.errors[0] and "refuses to delete" in result.errors[0]
    assert uids_in(other, "Trash")[: len(trash)] == trash  # nothing deleted
    assert uids_in(other, "Junk") == [] and len(junk) == 2  # the move still happened
    assert [e["action"] for e in audited(config)] == ["move:Trash", "move:Trash"]


def test_sent_age_uses_the_date_header_and_a_message_without_one_is_never_a_candidate(
    tmp_path: Path, user: Any
) -> None:
    def with_date(i: int, date: str | None) -> bytes:
        head = f"Subject: sent {i}\r\nMessage-ID: <s{i}@example.org>\r\n"
        return (head + (f"Date: {date}\r\n" if date is not None else "") + "\r\nbody\r\n").encode()

    dates = [
        "Mon, 1 Jan 2018 10:00:00 +0000",  # old
        (NOW - timedelta(days=31)).strftime("%a, %d %b %Y %H:%M:%S +0000"),  # just old enough
        (NOW - timedelta(days=29)).strftime("%a, %d %b %Y %H:%M:%S +0000"),  # too young
        None,  # no Date header
        "not a date at all",
    ]
    received = NOW - timedelta(days=400)  # INTERNALDATE old for all: must not matter
    user.dovecot.deliver_bulk(
        user.name, "Sent", [(with_date(i, d), received, "S") for i, d in enumerate(dates)]
    )
    sent = uids_in(user, "Sent")
    rules = {"sent-30d": {"folders": ["\\Sent"], "older_than": "30d", "age": "sent"}}
    config, account, _ = setup(tmp_path, user, ["sent-30d"], rules, max_delete_fraction=1.0)
    plan, _ = run(config, account, apply=False)
    assert plan.ok and planned(plan) == sent[:2]


def test_larger_than_is_applied_by_the_server(tmp_path: Path, user: Any) -> None:
    small = deliver(user, "Archive", [(40, "S")] * 3, size=2_000)
    big = deliver(user, "Archive", [(40, "S")] * 2, size=60_000)
    rules = {"big": {"folders": ["Archive"], "larger_than": "50KB", "age": "received"}}
    config, account, _ = setup(tmp_path, user, ["big"], rules, max_delete_fraction=1.0)
    plan, result = run(config, account, apply=True)
    assert planned(plan) == big and plan.pending_bytes > 100_000
    assert result is not None and result.ok and uids_in(user, "Archive") == small
