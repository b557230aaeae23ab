"""ESEARCH answers, UID sets, [MODIFIED] codes and MODSEQ items, parsed exactly (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from quotawatch.mail.imap import fallback, searches, wire


def test_uid_sets() -> None:
    assert searches.parse_uid_set(b"1:5,7,9:8") == [1, 2, 3, 4, 5, 7, 8, 9]
    assert searches.parse_uid_set(b"4294967295") == [4294967295]
    for bad in (b"", b"1:", b":3", b"1,,2", b"*", b"1:*", b"a", b"1 2"):
        assert searches.parse_uid_set(bad) is None, bad


def test_esearch_all_in_compact_ranges() -> None:
    assert searches.parse_esearch([b'(TAG "A5") UID ALL 1:5000,5002']) == [*range(1, 5001), 5002]
    assert searches.parse_esearch([b'(TAG "A5") UID']) == []  # nothing matched: no ALL
    assert searches.parse_esearch([b"(TAG A6) UID ALL 3 COUNT 1 MIN 3 MAX 3"]) == [3]
    assert searches.parse_esearch([b"UID ALL 7:9"]) == [7, 8, 9]  # no correlator
    assert searches.parse_esearch([b'(tag "x") uid all 2,1']) == [1, 2]  # any case, any order
    assert searches.parse_esearch([b'(TAG "A5") UID ALL 1:5 MODSEQ 12']) == [1, 2, 3, 4, 5]
    assert searches.parse_esearch([]) == []


def test_esearch_of_another_command_is_skipped() -> None:
    data = [b'(TAG "B1") UID ALL 1:3', b'(TAG "A7") UID ALL 9']
    assert searches.parse_esearch(data, tag=b"A7") == [9]


def test_esearch_anything_unexpected_is_none_never_an_empty_answer() -> None:
    for bad in (
        b'(TAG "A5") ALL 1:5',  # sequence numbers, not UIDs
        b'(TAG "A5") UID ALL',  # ALL without a set
        b'(TAG "A5") UID ALL 1:x',
        b'(TAG "A5") UID PARTIAL (1:10 1:5)',
        b'(TAG "A5") UID COUNT many',
        b"",
    ):
        assert searches.parse_esearch([bad]) is None, bad
    assert searches.parse_esearch([(b"UID ALL {3}", b"1:5")]) is None


def test_modified_response_code() -> None:
    assert searches.modified_uids("[MODIFIED 7,9:11] Conditional STORE failed") == [7, 9, 10, 11]
    assert searches.modified_uids("Store completed (0.001 + 0.000 secs).") is None
    assert searches.modified_uids("[modified 3] x") == [3]


def test_fetch_with_modseq_on_the_fast_path() -> None:
    data = [
        b'1 (UID 10 RFC822.SIZE 20 INTERNALDATE "22-Oct-2026 04:05:46 +0000" MODSEQ (2))',
        b"2 (FLAGS (\\Seen) MODSEQ (9))",  # unsolicited: another client changed flags
        b'3 (UID 12 RFC822.SIZE 30 INTERNALDATE "22-Oct-2026 04:05:46 +0200" MODSEQ (12345678901))',
    ]
    got = wire.parse_fetch(data, [b"RFC822.SIZE", b"INTERNALDATE", b"MODSEQ"])
    assert got == {
        10: {b"UID": 10, b"RFC822.SIZE": 20, b"MODSEQ": 2,
             b"INTERNALDATE": datetime(2026, 10, 22, 4, 5, 46, tzinfo=UTC)},
        12: {b"UID": 12, b"RFC822.SIZE": 30, b"MODSEQ": 12345678901,
             b"INTERNALDATE": datetime(2026, 10, 22, 2, 5, 46, tzinfo=UTC)},
    }  # fmt: skip
    # another order: the fast parser steps aside, the complete one reads MODSEQ as (n,)
    other = [b'1 (MODSEQ (5) UID 10 RFC822.SIZE 20 INTERNALDATE "22-Oct-2026 04:05:46 +0000")']
    items = [b"RFC822.SIZE", b"INTERNALDATE", b"MODSEQ"]
    assert wire.parse_fetch(other, items) is None
    assert fallback.parse_fetch("a", other, items, {10})[10][b"MODSEQ"] == (5,)


def test_vanished_answers_name_uids() -> None:
    assert searches.parse_vanished(b"1,3:5") == [1, 3, 4, 5]
    assert searches.parse_vanished(b"(EARLIER) 7:8") == [7, 8]
    for bad in (b"", b"(EARLIER)", b"1 2", b"x", (b"1", b"2")):
        assert searches.parse_vanished(bad) is None, bad


def test_flags_a_conditional_store_reports_by_uid() -> None:
    from quotawatch.mail.imap.removal import stored_flags

    data = [
        b"1 (UID 11 MODSEQ (6) FLAGS (\\Deleted \\Seen \\Recent))",
        b"2 (FLAGS (\\Flagged))",  # another session's change, by sequence number: not ours
        b"3 (MODSEQ (7) UID 13 FLAGS ())",
        b"1 (UID 11 FLAGS (\\Seen))",  # a later answer for the same UID wins
    ]
    assert stored_flags(data) == {11: [b"\\SEEN"], 13: []}
    assert stored_flags([]) == {}
    assert stored_flags([(b"1 (UID 11 FLAGS {3}", b"abc"), b")"]) is None  # a literal: ask
    assert stored_flags([b"1 (UID 11 MODSEQ (6))"]) is None  # no FLAGS: ask
