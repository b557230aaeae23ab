"""POP3 retention end to end on the real Dovecot: plan by first-seen age, archive verified before DELE, QUIT last."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quotawatch.cli import main
from quotawatch.config import Account, Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.mail.pop3.session import Pop3Session
from quotawatch.mail.snapshot import snapshot
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.executor import execute
from quotawatch.retention.planner import Plan
from quotawatch.retention.results import CleanupResult
from quotawatch.retention.rules import plan_account
from quotawatch.service.jobs import run_account
from quotawatch.state import State
from tests.integration.test_pop3 import T0, deliver, message, pop_dict, server_view
from tests.support import write_config


def rules(archive_dir: Path) -> dict[str, Any]:
    """The rules of the issue's example."""
    return {
        "pop-60d": {
            "folders": ["INBOX"], "older_than": "60d", "age": "saved", "action": "archive",
            "archive_dir": str(archive_dir / "{account}"), "allow_inbox": True,
        },
        "pop-make-room": {
            "when_above": "85%", "down_to": "70%", "folders": ["INBOX"], "order": "oldest",
            "action": "delete", "allow_inbox": True,
        },
    }  # fmt: skip


def setup(
    tmp_path: Path, user: Any, archive_dir: Path | None = None, **overrides: Any
) -> tuple[Config, Account]:
    acct = pop_dict(user, tmp_path, rules=["pop-60d", "pop-make-room"], max_delete_fraction="100%")
    acct.update(overrides)
    path = write_config(tmp_path, [acct], rules=rules(archive_dir or tmp_path / "archive"))
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    return config, account


def run(config: Config, account: Account, user: Any, now: datetime, *, apply: bool = True,
        cut_before_quit: bool = False) -> tuple[Plan, CleanupResult | None]:  # fmt: skip
    """One login as `cleanup --apply` does it (the job pipeline), at the injected time ``now``."""
    state = State(config.state_dir)
    session = Pop3Session.connect(account, SecretStr(user.password))
    if cut_before_quit:
        real_commit = session.commit

        def commit() -> None:
            user.dovecot.kill_user_sessions(user.name)  # the link breaks before QUIT
            real_commit()

        session.commit = commit  # type: ignore[method-assign]
    try:
        # as if the daemon had run an hour earlier: POP3 shows no server time, so the clock is
        # judged by the last run, and these tests jump ahead by weeks between runs
        state.set_clock_evidence(account.name, None, now - timedelta(hours=1))
        job = run_account(
            account, config, state, SecretCache(), cleanup=apply, now=now,
            factory=lambda _a, _p: session,
        )  # fmt: skip
        assert job.plan is not None, job.report.error
        return job.plan, job.cleanup
    finally:
        session.close()
        state.close()


def audit_entries(config: Config) -> list[dict[str, Any]]:
    """The audit log without the journal's ``intent`` lines."""
    entries = AuditLog(config.state_dir / "audit.jsonl").entries()
    return [e for e in entries if e["status"] != "intent"]


def test_archive_by_first_seen_age_then_delete(tmp_path: Path, user: Any) -> None:
    old = [message(i, 700 + 40 * i) for i in range(6)]
    deliver(user, old)
    config, account = setup(tmp_path, user)
    plan, _ = run(config, account, user, T0, apply=False)
    assert plan.actions == (), "first seen now: nothing is 60 days old yet"
    deliver(user, [message(10 + i) for i in range(2)])
    run(config, account, user, T0 + timedelta(days=30), apply=False)
    old_uidls, new_uidls = server_view(user, tmp_path)[2][:6], server_view(user, tmp_path)[2][6:]

    plan, result = run(config, account, user, T0 + timedelta(days=61))
    (action,) = plan.actions
    assert (action.rule, action.folder, action.action) == ("pop-60d", "INBOX", "archive")
    assert list(action.uids) == old_uidls and action.uidvalidity is None
    assert plan.to_json()["actions"][0]["uids"] == old_uidls, "uids are UIDL strings"
    assert result is not None and result.ok, result.errors
    assert result.messages == 6 and result.freed_bytes == sum(len(m) for m in old)
    archived = sorted((tmp_path / "archive" / account.name).glob("*/*"))
    assert sorted(p.read_bytes() for p in archived) == sorted(old), "verified copies"
    assert server_view(user, tmp_path)[2] == new_uidls
    entries = audit_entries(config)
    assert sorted(e["uid"] for e in entries) == sorted(old_uidls)
    assert {(e["status"], e["action"], e["folder"]) for e in entries} == {
        ("done", "archive", "INBOX")
    }
    assert all(Path(e["archive_path"]).exists() for e in entries)


def test_failed_archive_deletes_nothing(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(4)])
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the archive should go\n")
    config, account = setup(tmp_path, user, archive_dir=blocker)
    before = server_view(user, tmp_path)
    run(config, account, user, T0, apply=False)
    plan, result = run(config, account, user, T0 + timedelta(days=61))
    assert plan.messages == 4
    assert result is not None and not result.ok and result.messages == 0
    assert "archive" in result.errors[0]
    assert server_view(user, tmp_path) == before
    assert audit_entries(config) == []


def test_quit_without_its_ok_is_uncertain_and_reconciled(tmp_path: Path, user: Any) -> None:
    """The link breaks before QUIT is answered (the server got it or not): never "nothing deleted"."""
    deliver(user, [message(i) for i in range(4)])
    config, account = setup(tmp_path, user)
    before = server_view(user, tmp_path)
    run(config, account, user, T0, apply=False)
    plan, result = run(config, account, user, T0 + timedelta(days=61), cut_before_quit=True)
    assert plan.messages == 4
    assert result is not None and not result.ok and result.unconfirmed == 1
    assert result.messages == 0 and result.done[0].uncertain == 4
    assert "QUIT was sent but not confirmed" in result.errors[0]
    assert server_view(user, tmp_path) == before, "this server never got the QUIT"
    uncertain = [e["uid"] for e in audit_entries(config) if e["status"] == "uncertain"]
    assert sorted(uncertain) == sorted(before[2])
    plan, result = run(config, account, user, T0 + timedelta(days=62))
    assert result is not None and result.ok and result.messages == 4, "still there, still eligible"
    done = [e["uid"] for e in audit_entries(config) if e["status"] == "done"]
    assert sorted(done) == sorted(before[2]), "each message done exactly once"


def fetched_by_client(path: Path, user: Any, uidls: list[str]) -> None:
    """A POP3 client's state file saying it has downloaded exactly these messages."""
    path.write_text("".join(f"{user.name}@{user.dovecot.host} {u}\n" for u in uidls))


@pytest.mark.parametrize("why", ["client-state", "rule-changed"])
def test_quit_without_its_ok_then_no_longer_eligible_is_kept_not_deleted(
    tmp_path: Path, user: Any, why: str
) -> None:
    """Still there after a lost QUIT reply but no longer eligible: not a candidate again, left on
    the server, its ``uncertain`` entry settled ``kept`` (never ``done``); the ones that are still
    eligible go, each audited done exactly once."""
    deliver(user, [message(i) for i in range(4)])
    uidls = server_view(user, tmp_path)[2]
    fetchids = tmp_path / ".fetchids"
    fetched_by_client(fetchids, user, uidls)  # the client has every message: all eligible
    config, account = setup(tmp_path, user, client_state_file=str(fetchids))
    run(config, account, user, T0, apply=False)
    plan, result = run(config, account, user, T0 + timedelta(days=61), cut_before_quit=True)
    assert [sorted(a.uids) for a in plan.actions] == [sorted(uidls)]
    assert result is not None and result.unconfirmed == 1 and result.done[0].uncertain == 4
    assert server_view(user, tmp_path)[2] == uidls, "this server never got the QUIT"

    if why == "client-state":  # the client lost its state: two are no longer known downloaded
        fetched_by_client(fetchids, user, uidls[:2])
        eligible, ineligible = uidls[:2], uidls[2:]
    else:  # the archive rule was taken out; the quota rule has no pressure to act on
        config, account = setup(tmp_path, user, client_state_file=str(fetchids),
                                rules=["pop-make-room"])  # fmt: skip
        eligible, ineligible = [], uidls
    plan, result = run(config, account, user, T0 + timedelta(days=62))
    assert sorted(u for a in plan.actions for u in a.uids) == sorted(eligible), "not candidates"
    assert server_view(user, tmp_path)[2] == ineligible, "left on the server"
    if eligible:
        assert result is not None and result.ok and result.messages == len(eligible)
    else:
        assert result is None
    entries = audit_entries(config)
    by_status = {s: sorted(e["uid"] for e in entries if e["status"] == s) for s in
                 ("uncertain", "done", "kept")}  # fmt: skip
    assert by_status == {"uncertain": sorted(uidls), "done": sorted(eligible),
                         "kept": sorted(ineligible)}  # fmt: skip
    assert all("not eligible" in e["why"] for e in entries if e["status"] == "kept")
    assert not list((config.state_dir / "journal").glob("*")), "nothing left open"

    plan, result = run(config, account, user, T0 + timedelta(days=63))  # and it stays that way
    assert sorted(u for a in plan.actions for u in a.uids) == []
    assert server_view(user, tmp_path)[2] == ineligible and len(audit_entries(config)) == len(
        entries
    )


def test_lost_ok_after_quit_is_audited_done_by_uidl_next_run(tmp_path: Path, user: Any) -> None:
    """QUIT is executed by the server but its +OK never arrives: the next session finds the
    UIDLs gone and audits them done; nothing is deleted twice or reported as kept."""
    deliver(user, [message(i) for i in range(4)])
    config, account = setup(tmp_path, user)
    run(config, account, user, T0, apply=False)
    uidls = server_view(user, tmp_path)[2]
    state = State(config.state_dir)
    audit = AuditLog(config.state_dir / "audit.jsonl")
    session = Pop3Session.connect(account, SecretStr(user.password))
    real_short = session._client.short

    def short(line: str) -> bytes:
        answer = real_short(line)
        if line == "QUIT":  # the server has committed; the answer is lost on the way back
            raise ConnectionResetError(104, "Connection reset by peer")
        return answer

    session._client.short = short  # type: ignore[method-assign]
    try:
        now = T0 + timedelta(days=61)
        rules_used = {n: config.rules[n] for n in account.rules}
        state.set_clock_evidence(account.name, None, now - timedelta(hours=1))  # as in run()
        plan = plan_account(session, account, rules_used, snapshot(session, now), state, now)
        result = execute(session, plan, account, rules_used, audit, now)
    finally:
        session.close()
        state.close()
    assert not result.ok and result.unconfirmed == 1 and result.messages == 0
    assert server_view(user, tmp_path)[2] == [], "the server did delete them"
    assert [e["status"] for e in audit_entries(config)] == ["uncertain"] * 4
    plan, result2 = run(config, account, user, T0 + timedelta(days=62))
    assert plan.actions == () and result2 is None
    entries = audit_entries(config)
    assert sorted(e["uid"] for e in entries if e["status"] == "done") == sorted(uidls)
    assert all(e.get("reconciled") for e in entries if e["status"] == "done")
    assert {e["status"] for e in entries} == {"uncertain", "done"}
    assert not list((config.state_dir / "journal").glob("*")), "nothing left open"


def test_client_state_file_limits_deletions(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i) for i in range(6)])
    uidls = server_view(user, tmp_path)[2]
    fetchids = tmp_path / ".fetchids"
    fetchids.write_text("".join(f"{user.name}@{user.dovecot.host} {u}\n" for u in uidls[::2]))
    config, account = setup(tmp_path, user, client_state_file=str(fetchids))
    run(config, account, user, T0, apply=False)
    plan, result = run(config, account, user, T0 + timedelta(days=61))
    assert [list(a.uids) for a in plan.actions] == [uidls[::2]]
    assert any("3 message(s) kept: not downloaded by the client" in n for n in plan.notes)
    assert result is not None and result.ok and result.messages == 3
    assert server_view(user, tmp_path)[2] == uidls[1::2]


def test_min_on_server_holds_even_for_quota_pressure(tmp_path: Path, user: Any) -> None:
    deliver(user, [message(i, 3000) for i in range(10)])
    config, account = setup(tmp_path, user, quota=36_000, rules=["pop-make-room"])
    before = server_view(user, tmp_path)
    plan, _ = run(config, account, user, T0, apply=False)
    assert plan.usage_before is not None and plan.usage_before > 0.85
    assert plan.actions == () and any("min_on_server" in n for n in plan.notes)
    plan, result = run(config, account, user, T0 + timedelta(days=7))
    assert plan.messages > 0 and result is not None and result.ok
    assert server_view(user, tmp_path)[1] <= 0.70 * 36_000 < before[1]


def test_cli_plan_and_cleanup(
    tmp_path: Path, user: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    deliver(user, [message(i) for i in range(3)])
    config, account = setup(tmp_path, user)
    uidls = server_view(user, tmp_path)[2]
    state = State(config.state_dir)  # as if quotawatch had first seen them 70 days ago
    state.first_seen(account.name, "INBOX", 0, uidls, datetime.now(UTC) - timedelta(days=70))
    state.close()
    path = str(tmp_path / "quotawatch.yaml")
    assert main(["plan", "--json", "--config", path]) == 0
    (planned,) = json.loads(capsys.readouterr().out)["accounts"]
    assert planned["ok"] and planned["actions"][0]["uids"] == uidls
    assert server_view(user, tmp_path)[2] == uidls, "plan changes nothing"
    assert main(["cleanup", "--apply", "--json", "--config", path]) == 0
    (cleaned,) = json.loads(capsys.readouterr().out)["accounts"]
    assert cleaned["cleanup"]["ok"] and cleaned["cleanup"]["messages"] == 3
    assert server_view(user, tmp_path)[2] == []
    assert main(["check", "--json", "--config", path]) == 0
    (checked,) = json.loads(capsys.readouterr().out)["accounts"]
    assert checked["folders"][0]["messages"] == 0
