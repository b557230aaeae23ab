"""The POP3 client guard: min_on_server by first-seen time, and the client's own downloaded list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.config import Account
from quotawatch.mail.session import Candidate
from quotawatch.retention.client_guard import guard_candidates, login_names

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def pop_account(**kw: Any) -> Account:
    data: dict[str, Any] = {
        "name": "bob",
        "protocol": "pop3",
        "host": "pop.example.org",
        "username": "bob",
        "password_env": "QW_BOB",
        "quota": "500MB",
    }
    data.update(kw)
    return Account.model_validate(data)


def cands(*uidls: str) -> tuple[Candidate, ...]:
    return tuple(Candidate(u, 1000, None) for u in uidls)


def seen(**ages: timedelta) -> dict[int | str, datetime]:
    return {uidl: NOW - age for uidl, age in ages.items()}


def test_min_on_server_default_seven_days() -> None:
    acct = pop_account()
    assert acct.min_on_server == timedelta(days=7)
    first = seen(old=timedelta(days=30), edge=timedelta(days=7), young=timedelta(days=6, hours=23))
    allowed, notes = guard_candidates(acct, cands("old", "edge", "young"), first, NOW)
    assert [c.uid for c in allowed] == ["old", "edge"]
    (note,) = notes
    assert note.startswith("1 message(s) kept: on the server for less than 1w (min_on_server)")


def test_never_seen_is_never_allowed() -> None:
    allowed, notes = guard_candidates(pop_account(), cands("a", "b"), {}, NOW)
    assert allowed == () and notes[0].startswith("2 message(s) kept")


def test_advancing_the_clock_releases_messages() -> None:
    acct = pop_account(min_on_server="3d")
    first: dict[int | str, datetime] = {"a": NOW, "b": NOW + timedelta(days=2)}
    assert guard_candidates(acct, cands("a", "b"), first, NOW)[0] == ()
    later = NOW + timedelta(days=3)
    assert [c.uid for c in guard_candidates(acct, cands("a", "b"), first, later)[0]] == ["a"]
    last = NOW + timedelta(days=5)
    assert len(guard_candidates(acct, cands("a", "b"), first, last)[0]) == 2


def test_all_allowed_gives_no_note() -> None:
    allowed, notes = guard_candidates(pop_account(), cands("a"), seen(a=timedelta(days=8)), NOW)
    assert len(allowed) == 1 and notes == ()


def test_client_state_file_limits_deletions(tmp_path: Path) -> None:
    state = tmp_path / ".fetchids"
    state.write_text("bob@pop.example.org a\nbob@pop.example.org c\nother@pop.example.org b\n")
    acct = pop_account(client_state_file=str(state))
    old = timedelta(days=10)
    allowed, notes = guard_candidates(acct, cands("a", "b", "c"), seen(a=old, b=old, c=old), NOW)
    assert [c.uid for c in allowed] == ["a", "c"]
    (note,) = notes
    assert "1 message(s) kept: not downloaded by the client" in note and "(fetchmail)" in note


def test_both_guards_report_separately(tmp_path: Path) -> None:
    state = tmp_path / "popstate.dat"
    state.write_text("# POP3 State File\n\n*pop.example.org bob\nk a 1\nk young 1\nb big 1\n")
    acct = pop_account(client_state_file=str(state))
    old = timedelta(days=10)
    first = seen(a=old, young=timedelta(days=1), big=old, unknown=old)
    allowed, notes = guard_candidates(acct, cands("a", "young", "big", "unknown"), first, NOW)
    assert [c.uid for c in allowed] == ["a"]
    assert len(notes) == 2
    assert "1 message(s) kept: on the server" in notes[0]
    assert "2 message(s) kept: not downloaded" in notes[1] and "(thunderbird)" in notes[1]


def test_missing_state_file_allows_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "gone.fetchids"
    acct = pop_account(client_state_file=str(missing))
    allowed, notes = guard_candidates(acct, cands("a"), seen(a=timedelta(days=9)), NOW)
    assert allowed == ()
    assert (
        notes[-1] == f"client_state_file {missing}: No such file or directory; nothing is deleted"
    )


def test_ambiguous_state_file_allows_nothing(tmp_path: Path) -> None:
    state = tmp_path / ".fetchids"
    state.write_text("alice@pop.example.org a\n")
    acct = pop_account(client_state_file=str(state))
    allowed, notes = guard_candidates(acct, cands("a"), seen(a=timedelta(days=9)), NOW)
    assert allowed == ()
    assert "no entries for bob" in notes[-1] and "alice@pop.example.org" in notes[-1]
    assert notes[-1].endswith("nothing is deleted")


def test_state_file_not_read_when_nothing_is_old_enough(tmp_path: Path) -> None:
    acct = pop_account(client_state_file=str(tmp_path / "never-read"))
    allowed, notes = guard_candidates(acct, cands("a"), seen(a=timedelta(hours=1)), NOW)
    assert allowed == () and len(notes) == 1 and "client_state_file" not in notes[0]


def test_login_names_cover_master_user_and_authzid() -> None:
    assert login_names(pop_account(username="bob*admin")) == {"bob*admin", "bob"}
    assert login_names(pop_account(username="admin", authorize_as="bob")) == {"admin", "bob"}
