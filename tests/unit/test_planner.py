"""The pure planner: ordering, watermarks, protections, caps and projections over plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quotawatch.config import Rule
from quotawatch.mail.session import Candidate, FolderSelection
from quotawatch.model import FolderInfo, QuotaResource, Snapshot
from quotawatch.retention.caps import Limits
from quotawatch.retention.planner import Plan, RuleSelection, plan, projected_usage

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KIB = 1024
NO_CAPS = Limits(1.0, 100_000)


def rule(**kw: Any) -> Rule:
    return Rule.model_validate(kw)


def snap(
    usage: int = 50 * KIB, limit: int = 100 * KIB, messages: tuple[int, int] | None = None
) -> Snapshot:
    quota = [QuotaResource("User quota", "STORAGE", usage, limit)]
    if messages is not None:
        quota.append(QuotaResource("User quota", "MESSAGE", *messages))
    folders = (FolderInfo("INBOX", 10, 0), FolderInfo("Trash", 10, 0, "\\Trash"))
    return Snapshot("alice", "imap", NOW, tuple(quota), folders)


def cand(uid: int, days: float | None, size: int = KIB) -> Candidate:
    return Candidate(uid, size, None if days is None else NOW - timedelta(days=days))


def fsel(folder: str, *cands: Candidate, total: int = 100, uidvalidity: int = 7) -> FolderSelection:
    return FolderSelection(folder, uidvalidity, total, tuple(cands))


def run(
    rules: dict[str, Rule],
    selections: list[RuleSelection],
    snapshot: Snapshot | None = None,
    limits: Limits = NO_CAPS,
) -> Plan:
    return plan(snapshot or snap(), selections, rules, limits, NOW)


def uids(p: Plan, rule_name: str | None = None) -> list[int | str]:
    return [u for a in p.actions if rule_name in (None, a.rule) for u in a.uids]


# ------------------------------------------------------------------ age rules and protections
def test_age_rule_takes_only_messages_older_than_the_cutoff() -> None:
    r = {"trash-30d": rule(folders=["\\Trash"], older_than="30d")}
    sel = RuleSelection("trash-30d", (fsel("Trash", cand(1, 31), cand(2, 29.9), cand(3, 400)),))
    p = run(r, [sel])
    assert p.ok and uids(p) == [1, 3]
    (action,) = p.actions
    assert (action.folder, action.action, action.uidvalidity, action.bytes) == (
        "Trash",
        "delete",
        7,
        2 * KIB,
    )


def test_a_message_without_a_usable_date_is_never_taken() -> None:
    r = {"t": rule(folders=["Trash"], older_than="1d")}
    p = run(r, [RuleSelection("t", (fsel("Trash", cand(1, None), cand(2, 5)),))])
    assert uids(p) == [2]


def test_keep_newer_than_wins_over_a_shorter_older_than() -> None:
    r = {"t": rule(folders=["Trash"], older_than="1d", keep_newer_than="7d")}
    p = run(r, [RuleSelection("t", (fsel("Trash", cand(1, 2), cand(2, 8)),))])
    assert uids(p) == [2]


def test_larger_than_is_checked_again_by_the_planner() -> None:
    r = {"big": rule(folders=["Trash"], larger_than="10KiB")}
    p = run(
        r, [RuleSelection("big", (fsel("Trash", cand(1, 5, 10 * KIB), cand(2, 5, 10 * KIB + 1)),))]
    )
    assert uids(p) == [2]


def test_default_keep_newer_than_protects_the_last_day_for_size_rules() -> None:
    r = {"big": rule(folders=["Trash"], larger_than="1KiB")}
    p = run(
        r, [RuleSelection("big", (fsel("Trash", cand(1, 0.5, 5 * KIB), cand(2, 1.5, 5 * KIB)),))]
    )
    assert uids(p) == [2]


def test_a_message_is_planned_once_even_when_two_rules_select_it() -> None:
    r = {
        "a": rule(folders=["Trash"], older_than="10d"),
        "b": rule(folders=["Trash"], older_than="20d"),
    }
    f = fsel("Trash", cand(1, 30), cand(2, 15))
    p = run(r, [RuleSelection("a", (f,)), RuleSelection("b", (f,))])
    assert uids(p, "a") == [1, 2] and uids(p, "b") == []


def test_projection_and_json_shape() -> None:
    r = {"t": rule(folders=["Trash"], older_than="30d")}
    p = run(r, [RuleSelection("t", (fsel("Trash", cand(5, 40, 10 * KIB), cand(3, 40, 5 * KIB)),))])
    assert p.usage_before == pytest.approx(0.5)
    assert p.usage_after == pytest.approx(0.35)
    assert p.pending_bytes == 15 * KIB and p.messages == 2
    data = p.to_json()
    assert {"name", "ok", "error", "usage_before", "usage_after", "actions"} <= set(data)
    assert data["actions"] == [
        {"rule": "t", "folder": "Trash", "action": "delete", "uids": [3, 5], "uidvalidity": 7,
         "bytes": 15 * KIB, "messages": 2}
    ]  # fmt: skip


def test_archive_dir_gets_the_account_name() -> None:
    r = {
        "t": rule(
            folders=["Trash"], older_than="30d", action="archive", archive_dir="/srv/a/{account}"
        )
    }
    p = run(r, [RuleSelection("t", (fsel("Trash", cand(1, 40)),))])
    assert p.actions[0].archive_dir == "/srv/a/alice"


def test_moves_free_no_quota() -> None:
    r = {"m": rule(folders=["Junk"], older_than="30d", action="move:Trash")}
    p = run(r, [RuleSelection("m", (fsel("Junk", cand(1, 40, 10 * KIB)),))])
    assert uids(p) == [1]
    assert p.usage_after == p.usage_before
    assert any("frees no quota" in n for n in p.notes)


# ------------------------------------------------------------------ make-room (watermarks)
MAKE_ROOM = {
    "make-room": rule(
        folders=["\\Junk", "\\Trash", "INBOX"], when_above="90%", down_to="80%", allow_inbox=True
    )
}


def test_make_room_does_nothing_below_the_high_watermark() -> None:
    sel = RuleSelection("make-room", (fsel("Junk", cand(1, 40)),))
    p = run(MAKE_ROOM, [sel], snap(usage=90 * KIB))
    assert p.actions == () and any("not above 90 %" in n for n in p.notes)


def test_make_room_frees_in_folder_order_oldest_first_until_below_the_low_watermark() -> None:
    junk = fsel("Junk", cand(10, 3, 4 * KIB), cand(11, 9, 4 * KIB))
    trash = fsel("Trash", cand(20, 50, 4 * KIB), cand(21, 60, 4 * KIB))
    inbox = fsel("INBOX", cand(30, 900, 4 * KIB))
    p = run(MAKE_ROOM, [RuleSelection("make-room", (junk, trash, inbox))], snap(usage=95 * KIB))
    # 95 -> 91 (UID 11, oldest Junk) -> 87 (UID 10) -> 83 (UID 21, oldest Trash) -> 79 < 80: stop
    assert [(a.folder, a.uids) for a in p.actions] == [("Junk", (10, 11)), ("Trash", (20, 21))]
    assert p.usage_after == pytest.approx(0.79)


def test_make_room_order_largest() -> None:
    r = {"mr": rule(folders=["Trash"], when_above="90%", down_to="80%", order="largest")}
    trash = fsel("Trash", cand(1, 100, 2 * KIB), cand(2, 5, 12 * KIB), cand(3, 50, 8 * KIB))
    p = run(r, [RuleSelection("mr", (trash,))], snap(usage=95 * KIB))
    assert uids(p) == [2, 3]  # 95 -> 83 (12 KiB) -> 75 (8 KiB)


def test_make_room_counts_the_message_resource_too() -> None:
    r = {"mr": rule(folders=["Trash"], when_above="90%", down_to="80%")}
    trash = fsel("Trash", *(cand(i, 100 - i, 1) for i in range(1, 20)))
    # storage is at 10%, but messages are at 95 of 100: five messages must go
    p = run(r, [RuleSelection("mr", (trash,))], snap(usage=10 * KIB, messages=(95, 100)))
    assert p.messages == 16 and p.usage_after == pytest.approx(0.79)


def test_age_rules_run_first_and_make_room_sees_what_they_freed() -> None:
    rules = {**MAKE_ROOM, "trash-30d": rule(folders=["\\Trash"], older_than="30d")}
    trash = fsel("Trash", cand(20, 50, 8 * KIB), cand(21, 60, 8 * KIB))
    junk = fsel("Junk", cand(10, 3, 4 * KIB))
    sels = [RuleSelection("make-room", (junk, trash)), RuleSelection("trash-30d", (trash,))]
    p = run(rules, sels, snap(usage=95 * KIB))
    assert [a.rule for a in p.actions] == ["trash-30d"]  # 95 -> 79: make-room has nothing to do
    assert p.usage_after == pytest.approx(0.79)


def test_make_room_notes_when_the_candidates_are_not_enough() -> None:
    p = run(
        MAKE_ROOM,
        [RuleSelection("make-room", (fsel("Junk", cand(1, 5, 2 * KIB)),))],
        snap(usage=99 * KIB),
    )
    assert uids(p) == [1] and p.usage_after == pytest.approx(0.97)
    assert any("usage stays at 97 %" in n for n in p.notes)


def test_make_room_respects_keep_newer_than() -> None:
    p = run(
        MAKE_ROOM,
        [RuleSelection("make-room", (fsel("Junk", cand(1, 0.2, 50 * KIB)),))],
        snap(usage=99 * KIB),
    )
    assert p.actions == ()


def test_make_room_without_a_quota_does_nothing() -> None:
    s = Snapshot("alice", "imap", NOW, (), ())
    p = run(MAKE_ROOM, [RuleSelection("make-room", (fsel("Junk", cand(1, 50)),))], s)
    assert p.actions == () and p.usage_before is None and p.usage_after is None
    assert any("no STORAGE or MESSAGE quota limit" in n for n in p.notes)


def test_make_room_with_a_move_action_plans_nothing() -> None:
    r = {"mr": rule(folders=["Junk"], when_above="90%", down_to="80%", action="move:Archive")}
    p = run(r, [RuleSelection("mr", (fsel("Junk", cand(1, 50)),))], snap(usage=95 * KIB))
    assert p.actions == ()


# ------------------------------------------------------------------ caps
def test_fraction_cap_stops_the_account_with_a_clear_message() -> None:
    r = {"junk-14d": rule(folders=["\\Junk"], older_than="14d")}
    junk = fsel("Junk", *(cand(i, 20) for i in range(1800)), total=2000)
    p = run(r, [RuleSelection("junk-14d", (junk,))], limits=Limits(0.5, 5000))
    assert not p.ok and p.actions == ()
    assert p.error == (
        "rule junk-14d would delete 1800 of 2000 messages (90%) in Junk, above "
        "max_delete_fraction 50%; nothing done"
    )
    assert p.to_json()["ok"] is False and p.to_json()["actions"] == []


def test_fraction_cap_allows_exactly_the_fraction() -> None:
    r = {"t": rule(folders=["Trash"], older_than="14d")}
    p = run(
        r,
        [RuleSelection("t", (fsel("Trash", *(cand(i, 20) for i in range(5)), total=10),))],
        limits=Limits(0.5, 5000),
    )
    assert p.ok and p.messages == 5


def test_fraction_cap_adds_up_rules_on_the_same_folder() -> None:
    r = {
        "a": rule(folders=["Trash"], older_than="30d"),
        "b": rule(folders=["Trash"], larger_than="1KiB"),
    }
    f = fsel("Trash", cand(1, 40), cand(2, 40), cand(3, 5, 4 * KIB), total=5)
    p = run(r, [RuleSelection("a", (f,)), RuleSelection("b", (f,))], limits=Limits(0.5, 5000))
    assert p.error is not None and p.error.startswith(
        "rules a, b would delete 3 of 5 messages (60%) in Trash"
    )


def test_a_rule_can_lift_the_fraction_cap_for_its_folders() -> None:
    from quotawatch.config import Account

    r = {
        "trash-30d": rule(folders=["\\Trash"], older_than="30d", max_delete_fraction="100%"),
        "junk-14d": rule(folders=["\\Junk"], older_than="14d"),
    }
    account = Account.model_validate(
        {"name": "a", "host": "h", "username": "u", "password_env": "X"}
    )
    limits = Limits.of(account, r)
    trash = fsel("Trash", *(cand(i, 40) for i in range(10)), total=10)
    assert run(r, [RuleSelection("trash-30d", (trash,))], limits=limits).messages == 10
    first = fsel("Junk", *(cand(i, 40) for i in range(5)), total=10)
    second = fsel("Junk", *(cand(i, 40) for i in range(5, 10)), total=10)
    both = run(
        r,
        [RuleSelection("trash-30d", (first,)), RuleSelection("junk-14d", (second,))],
        limits=limits,
    )
    assert both.error is not None and "max_delete_fraction 50%" in both.error, "strictest wins"


def test_message_cap_stops_a_runaway_rule() -> None:
    r = {"t": rule(folders=["Trash"], older_than="1d")}
    f = fsel("Trash", *(cand(i, 5) for i in range(11)), total=1000)
    p = run(r, [RuleSelection("t", (f,))], limits=Limits(0.5, 10))
    assert (
        p.error
        == "rules t would remove 11 messages in one run, above max_delete_messages 10; nothing done"
    )


def test_projected_usage_takes_the_fullest_limited_resource() -> None:
    quota = [
        QuotaResource("r", "STORAGE", 800, 1000),
        QuotaResource("r", "MESSAGE", 90, 100),
        QuotaResource("r", "OTHER", 5, 0),
    ]
    assert projected_usage(quota, 0, 0) == pytest.approx(0.9)
    assert projected_usage(quota, 100, 30) == pytest.approx(0.7)
    assert projected_usage([], 0, 0) is None


def test_make_room_looks_only_at_resources_that_removing_mail_frees() -> None:
    s = snap(usage=95 * KIB)
    s = Snapshot(
        s.account,
        s.protocol,
        NOW,
        (*s.quota, QuotaResource("r", "X-ANNOTATION", 99, 100)),
        s.folders,
    )
    trash = fsel("Trash", cand(1, 50, 10 * KIB), cand(2, 60, 10 * KIB), cand(3, 70, 10 * KIB))
    p = run(MAKE_ROOM, [RuleSelection("make-room", (trash,))], s)
    assert uids(p) == [2, 3]  # 95 -> 75 of STORAGE; the annotation resource stays at 99%
    assert p.usage_before == pytest.approx(0.99) and p.usage_after == pytest.approx(0.99)


# ------------------------------------------------------------------ arrival, protections, modseqs
def test_keep_newer_than_is_measured_on_arrival_never_on_the_date_header() -> None:
    """age: sent measures older_than on the Date header, but a message that arrived an hour ago
    with a Date of 2019 is younger than keep_newer_than: it stays, whatever the sender wrote."""
    r = {"sent-30d": rule(folders=["\\Sent"], older_than="30d", age="sent")}
    old_date = NOW - timedelta(days=2000)
    arrived_now = Candidate(1, KIB, old_date, arrived=NOW - timedelta(hours=1))
    arrived_before = Candidate(2, KIB, old_date, arrived=NOW - timedelta(days=2))
    future_date = Candidate(3, KIB, NOW + timedelta(days=9), arrived=NOW - timedelta(days=90))
    p = run(
        r, [RuleSelection("sent-30d", (fsel("Sent", arrived_now, arrived_before, future_date),))]
    )
    assert uids(p) == [2]
    # on arrival ages keep_newer_than still applies to the age date itself
    r2 = {"t": rule(folders=["\\Trash"], older_than="1d", keep_newer_than="3d")}
    young = Candidate(4, KIB, NOW - timedelta(days=2), arrived=NOW - timedelta(days=50))
    assert uids(run(r2, [RuleSelection("t", (fsel("Trash", young),))])) == []


def test_planned_actions_carry_the_protections_and_modseqs() -> None:
    r = {
        "inbox": rule(folders=["INBOX"], older_than="30d", allow_inbox=True),
        "trash": rule(folders=["\\Trash"], older_than="30d", keep_flagged=False),
    }
    inbox = fsel("INBOX", Candidate(5, KIB, NOW - timedelta(days=40), modseq=17),
                 Candidate(3, KIB, NOW - timedelta(days=40), modseq=9))  # fmt: skip
    trash = fsel("Trash", Candidate(8, KIB, NOW - timedelta(days=40)))
    p = run(r, [RuleSelection("inbox", (inbox,)), RuleSelection("trash", (trash,))])
    a, b = p.actions
    assert a.uids == (3, 5) and a.modseqs == (9, 17)
    assert a.keep.flagged and a.keep.unseen and dict(a.keep.modseqs) == {3: 9, 5: 17}
    assert not b.keep.flagged and not b.keep.unseen and b.modseqs == () and b.keep.modseqs == {}


# ------------------------------------------------------------------ Gmail's download limit
GMAIL = Limits(1.0, 100_000, download_per_day=2_500_000_000)
MB = 1_000_000


def archive_rule(**kw: Any) -> Rule:
    return rule(folders=["News"], older_than="30d", action="archive", archive_dir="/a", **kw)


def test_an_archive_plan_on_gmail_notes_the_download_limit() -> None:
    r = {"news": archive_rule(), "trash": rule(folders=["Trash"], older_than="30d")}
    sels = [RuleSelection("news", (fsel("News", cand(1, 40, 30 * MB), cand(2, 40, 12 * MB)),)),
            RuleSelection("trash", (fsel("Trash", cand(3, 40, 900 * MB)),))]  # fmt: skip
    p = run(r, sels, snap(limit=10**12), GMAIL)
    assert "Gmail limits IMAP downloads to 2,500 MB a day: this plan archives 42 MB" in p.notes
    assert p.warnings == ()
    assert "warnings" not in p.to_json() or p.to_json()["warnings"] == []
    assert not any("Gmail" in n for n in run(r, sels, snap(limit=10**12)).notes)  # not gmail
    deletes = run({"trash": r["trash"]}, sels[1:], snap(limit=10**12), GMAIL)
    assert not any("Gmail" in n for n in deletes.notes)  # nothing downloaded


def test_an_archive_plan_above_gmails_daily_limit_says_so_prominently() -> None:
    r = {"news": archive_rule()}
    sel = RuleSelection("news", (fsel("News", *[cand(i, 40, 900 * MB) for i in range(1, 4)]),))
    p = run(r, [sel], snap(limit=10**13), GMAIL)
    (warning,) = p.warnings
    assert warning.startswith(
        "this plan archives 2,700 MB, above Gmail's IMAP download limit of 2,500 MB a day"
    )
    assert p.to_json()["warnings"] == [warning]
    assert not any("Gmail" in n for n in p.notes)


def test_plan_output_shows_the_gmail_warning_before_the_table() -> None:
    from quotawatch.output import render_plans

    r = {"news": archive_rule()}
    sel = RuleSelection("news", (fsel("News", *[cand(i, 40, 900 * MB) for i in range(1, 4)]),))
    lines = render_plans([(run(r, [sel], snap(limit=10**13), GMAIL), None)]).splitlines()
    assert lines[1].startswith("  WARNING: this plan archives 2,700 MB, above Gmail's")
    assert lines[2].lstrip().startswith("RULE")
    small = run(r, [RuleSelection("news", (fsel("News", cand(1, 40, 5 * MB)),))], None, GMAIL)
    notes = render_plans([(small, None)]).splitlines()
    assert (
        "  note: Gmail limits IMAP downloads to 2,500 MB a day: this plan archives 5.0 MB" in notes
    )
