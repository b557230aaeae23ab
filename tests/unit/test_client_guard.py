"""Parsers of POP3 client state files: Thunderbird popstate.dat, getmail oldmail-*, fetchmail .fetchids."""

from __future__ import annotations

from pathlib import Path

import pytest

from quotawatch.retention.client_guard import parse_client_state, read_client_state

USERS = {"bob"}
HOST = "pop.example.org"

THUNDERBIRD = b"""# POP3 State File
# This is a generated file!  Do not edit.

*pop.example.org bob
k 000000016b0b5a09 1717236000
d 000000026b0b5a09 1717236000
b 000000036b0b5a09 1717236000
f 000000046b0b5a09 1717236000
"""


def parse(data: bytes, users: set[str] = USERS, host: str = HOST) -> tuple[str, set[str]]:
    state = parse_client_state(data, users=users, host=host)
    return state.format, set(state.uidls)


def test_thunderbird_only_fully_downloaded() -> None:
    fmt, uidls = parse(THUNDERBIRD)
    assert fmt == "thunderbird"
    assert uidls == {"000000016b0b5a09", "000000026b0b5a09"}, (
        "b = headers only, f = body not fetched"
    )


def test_thunderbird_crlf_and_old_netscape_header() -> None:
    data = THUNDERBIRD.replace(b"# POP3", b"# Netscape POP3").replace(b"\n", b"\r\n")
    assert parse(data)[1] == {"000000016b0b5a09", "000000026b0b5a09"}


def test_thunderbird_several_accounts_picks_the_user() -> None:
    data = THUNDERBIRD + b"*pop.example.org alice\nk alice-1 1\n*other.example.net carol\nk c 1\n"
    assert parse(data)[1] == {"000000016b0b5a09", "000000026b0b5a09"}
    assert parse(data, users={"alice"})[1] == {"alice-1"}


def test_same_user_on_two_hosts_is_narrowed_by_host() -> None:
    data = b"*pop.example.org bob\nk here 1\n*pop.example.net bob\nk there 1\n"
    assert parse(data)[1] == {"here"}
    with pytest.raises(ValueError, match="several hosts"):
        parse(data, host="pop3.example.com")


def test_thunderbird_malformed_line() -> None:
    with pytest.raises(ValueError, match="line 2: expected"):
        parse(b"*pop.example.org bob\nkeep-me-please\n")


def test_getmail_oldmail() -> None:
    data = b"000000016b0b5a09\x001717236000\n000000026b0b5a09\x001717236001\n"
    state = parse_client_state(data, users=USERS, host=HOST)
    assert state.format == "getmail"
    assert state.has("000000016b0b5a09") and not state.has("000000036b0b5a09")


def test_getmail_stores_slash_as_dash() -> None:
    state = parse_client_state(b"abc-def\x001717236000\n", users=USERS, host=HOST)
    assert state.has("abc/def") and state.has("abc-def")


def test_fetchmail_fetchids() -> None:
    data = b"bob@pop.example.org 000000016b0b5a09\nbob@pop.example.org <x@y>\nalice@pop.example.org z\n"
    assert parse(data) == ("fetchmail", {"000000016b0b5a09", "<x@y>"})


def test_fetchmail_user_with_at_sign() -> None:
    data = b"bob@example.org@pop.example.org u1\n"
    assert parse(data, users={"bob@example.org"}) == ("fetchmail", {"u1"})


def test_plain_list_of_uidls() -> None:
    assert parse(b"# exported by hand\nu1\nu2\n\n") == ("plain", {"u1", "u2"})


def test_empty_file_lists_nothing() -> None:
    assert parse(b"") == ("empty", set())
    assert parse(b"# POP3 State File\n# nothing yet\n") == ("empty", set())


def test_unknown_user_names_what_the_file_has() -> None:
    with pytest.raises(ValueError) as info:
        parse(THUNDERBIRD, users={"carol"})
    assert str(info.value) == "no entries for carol (the file lists bob@pop.example.org)"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="not a known client state format"):
        parse(b"this is not a state file\n")


def test_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "popstate.dat"
    path.write_bytes(THUNDERBIRD)
    assert read_client_state(path, users=USERS, host=HOST).uidls == {
        "000000016b0b5a09",
        "000000026b0b5a09",
    }
    with pytest.raises(OSError):
        read_client_state(tmp_path / "missing", users=USERS, host=HOST)
