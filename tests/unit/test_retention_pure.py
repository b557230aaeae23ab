"""Folder resolution and search queries of retention rules, and the archive and audit files."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.config import Rule
from quotawatch.errors import SafetyStop
from quotawatch.model import FolderInfo
from quotawatch.retention.archive import Archive, maildir_folder_name
from quotawatch.retention.audit import AuditLog
from quotawatch.retention.rules import move_target, resolve_folders, search_query

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FOLDERS = (
    FolderInfo("INBOX", 5, 0),
    FolderInfo("Müll", 5, 0, "\\Trash"),
    FolderInfo("Junk", 5, 0, "\\Junk"),
    FolderInfo("Lists/python", 5, 0),
    FolderInfo("Lists/rust", 5, 0),
    FolderInfo("Virtual/All", 5, 0, "\\All"),
    FolderInfo("Archive", 5, 0, "\\Archive"),
)


def rule(**kw: Any) -> Rule:
    return Rule.model_validate(kw)


def test_entries_resolve_in_order_of_sacrifice() -> None:
    r = rule(folders=["\\Junk", "\\trash", "Lists/*", "INBOX"], older_than="1d", allow_inbox=True)
    names, notes = resolve_folders("r", r, FOLDERS)
    assert names == ["Junk", "Müll", "Lists/python", "Lists/rust", "INBOX"] and notes == []


def test_globs_skip_inbox_and_virtual_folders_and_duplicates() -> None:
    names, _ = resolve_folders("r", rule(folders=["Junk", "*"], older_than="1d"), FOLDERS)
    assert names == ["Junk", "Müll", "Lists/python", "Lists/rust", "Archive"]
    names, _ = resolve_folders("r", rule(folders=["*"], older_than="1d", allow_inbox=True), FOLDERS)
    assert "INBOX" in names and "Virtual/All" not in names


def test_unmatched_entries_are_noted_and_the_move_target_is_never_cleaned() -> None:
    r = rule(folders=["\\Drafts", "Junk", "Archive"], older_than="1d", action="move:Archive")
    names, notes = resolve_folders("r", r, FOLDERS)
    assert names == ["Junk"]
    assert notes == ["rule r: no folder matches '\\\\Drafts'"]
    assert (
        move_target(rule(folders=["Junk"], older_than="1d", action="move:\\Trash"), FOLDERS)
        == "Müll"
    )


def test_search_query_carries_the_protections() -> None:
    r = rule(folders=["INBOX"], older_than="30d", allow_inbox=True, larger_than="1MB")
    q = search_query(r, "INBOX", NOW)
    assert q.before == NOW - timedelta(days=30) and q.age == "saved"
    assert q.exclude_flagged and q.exclude_unseen and q.larger_than == 1_000_000
    assert not search_query(r, "Junk", NOW).exclude_unseen
    loose = rule(folders=["INBOX"], when_above="90%", down_to="80%", allow_inbox=True,
                 keep_unseen=False, keep_flagged=False)  # fmt: skip
    q = search_query(loose, "INBOX", NOW)
    assert q.before == NOW - timedelta(days=1) and not q.exclude_unseen and not q.exclude_flagged


def test_maildir_folder_names_cannot_escape_the_archive() -> None:
    assert maildir_folder_name("Archiv/2023") == "Archiv.2023"
    assert maildir_folder_name("../../etc") == "_._.etc"
    assert maildir_folder_name("Entwürfe") == "Entwürfe"


def test_archive_stores_verifies_and_keeps_the_date(tmp_path: Path) -> None:
    data = b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    archive = Archive(tmp_path / "alice", "alice")
    path = archive.store("Entwürfe/Alt", data, when)
    assert path.parent == tmp_path / "alice" / ".Entwürfe.Alt" / "new"
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert path.stat().st_mtime == when.timestamp()
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "alice").stat().st_mode & 0o077 == 0
    inbox = archive.store("INBOX", data)
    assert inbox.parent == tmp_path / "alice" / "new"


def test_archive_under_a_file_is_a_safety_stop(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SafetyStop, match="alice: archive"):
        Archive(tmp_path / "file" / "alice", "alice").store("Trash", b"x")


def test_audit_log_appends_json_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    assert list(log.entries()) == []
    log.record_many([{"uid": 1, "folder": "Müll"}])
    log.record_many([{"uid": 2}, {"uid": 3}])
    log.record_many([])
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["uid"] for x in lines] == [1, 2, 3]
    assert "Müll" in lines[0]
    assert log.path.stat().st_mode & 0o777 == 0o600


def test_archive_creates_missing_parents_and_fills_an_empty_root(tmp_path: Path) -> None:
    deep = Archive(tmp_path / "a" / "b" / "alice", "alice").store("INBOX", b"x\r\n")
    assert deep.read_bytes() == b"x\r\n"
    (tmp_path / "empty").mkdir()
    assert Archive(tmp_path / "empty", "bob").store("Trash", b"y").read_bytes() == b"y"


def test_fast_fetch_parser_reads_the_retention_items_and_skips_unsolicited_ones() -> None:
    from quotawatch.mail.imap.wire import header_value as _header
    from quotawatch.mail.imap.wire import parse_fetch as _parse_fast

    items = [b"RFC822.SIZE", b"INTERNALDATE", b"SAVEDATE", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
    data = [
        (b'1 (UID 5 RFC822.SIZE 81 INTERNALDATE "19-Oct-2023 22:44:57 +0200" SAVEDATE NIL '
         b"BODY[HEADER.FIELDS (MESSAGE-ID)] {22}", b"Message-ID: <m0@x>\r\n\r\n"),
        b")",
        b"2 (FLAGS (\\Seen))",
        b'3 (UID 7 RFC822.SIZE 90 INTERNALDATE " 1-Jan-2024 10:00:00 +0000" '
        b'SAVEDATE "02-Jan-2024 10:00:00 +0000" BODY[HEADER.FIELDS (MESSAGE-ID)] "")',
    ]  # fmt: skip
    parsed = _parse_fast(data, items)
    assert parsed is not None and sorted(parsed) == [5, 7]
    assert parsed[5][b"RFC822.SIZE"] == 81 and parsed[5][b"SAVEDATE"] is None
    assert parsed[5][b"INTERNALDATE"] == datetime(2023, 10, 19, 20, 44, 57, tzinfo=UTC)
    assert _header(parsed[5][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"], "Message-ID") == "<m0@x>"
    assert _header(parsed[7][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"], "Message-ID") is None
    assert parsed[7][b"SAVEDATE"] == b"02-Jan-2024 10:00:00 +0000"
    # an item missing (or in an unexpected form) means: fall back to imapclient's parser
    assert _parse_fast([b"1 (UID 5 RFC822.SIZE 81)"], items) is None
    assert _parse_fast([b"junk"], items) is None
    assert _header(b"Message-ID:\r\n <folded@x>\r\n\r\n", "message-id") == "<folded@x>"
