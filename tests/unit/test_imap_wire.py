"""The lean IMAP response parsers give exactly what imapclient's general parser gives, or step aside."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

from quotawatch.mail.imap import fallback
from quotawatch.mail.imap.searches import parse_search
from quotawatch.mail.imap.syntax import uid_ranges
from quotawatch.mail.imap.wire import (
    header_value,
    internaldate,
    parse_fetch,
    parse_list,
    parse_quota,
    parse_status,
    response_code,
)

META = [b"RFC822.SIZE", b"INTERNALDATE", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def idate(when: datetime, zone_minutes: int, pad: str = "0") -> bytes:
    local = when + timedelta(minutes=zone_minutes)
    sign = "-" if zone_minutes < 0 else "+"
    hh, mm = divmod(abs(zone_minutes), 60)
    day = f"{local.day:2d}".replace(" ", pad)
    return (
        f"{day}-{MONTHS[local.month - 1]}-{local.year} {local:%H:%M:%S} {sign}{hh:02d}{mm:02d}"
    ).encode()


def test_internaldate_agrees_with_imapclient_on_random_dates_and_zones() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        when = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**9))
        zone = rng.choice([0, 60, -300, 330, -90, 840, -720, 59])
        raw = idate(when, zone, pad=rng.choice("0 "))
        expected = parse_to_datetime(raw, normalise=False).astimezone(UTC)
        got = internaldate(raw)
        assert got == expected == when and got is not None and got.tzinfo is UTC, raw


def test_internaldate_of_nonsense_is_none_not_an_exception() -> None:
    for raw in [b"", b"garbage", b"31-Feb-2024 10:00:00 +0000", b"01-Xyz-2024 10:00:00 +0000",
                b"01-Mar-2024 10:11:60 +0000", b"01-Mar-2024 10:11:12 +9999"]:  # fmt: skip
        assert internaldate(raw) is None, raw
    assert internaldate(b"1-Mar-2024 10:11:12 +0000") == datetime(
        2024, 3, 1, 10, 11, 12, tzinfo=UTC
    )


def fetch_lines(rng: random.Random, n: int, *, literal: bool) -> list[object]:
    data: list[object] = []
    for seq in range(1, n + 1):
        uid, size = seq * 3, rng.randrange(100, 10**7)
        date = idate(
            datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**8)), 120
        )
        head = b'%d (UID %d RFC822.SIZE %d INTERNALDATE "%s"' % (seq, uid, size, date)
        if literal:
            body = b"Message-ID: <%d@x>\r\n\r\n" % uid
            data += [(head + b" BODY[HEADER.FIELDS (MESSAGE-ID)] {%d}" % len(body), body), b")"]
        else:
            data.append(head + b")")
        if rng.random() < 0.1:  # another client changed flags meanwhile
            data.append(b"%d (FLAGS (\\Seen))" % rng.randrange(1, n + 1))
    return data


def reference(data: list[object]) -> dict[int, dict[bytes, object]]:
    parsed = parse_fetch_response(data, normalise_times=False, uid_is_key=False)
    out = {}
    for item in parsed.values():
        if b"UID" not in item:
            continue  # the unsolicited FLAGS responses
        item = {k: v for k, v in item.items() if k not in (b"SEQ", b"FLAGS")}
        item[b"INTERNALDATE"] = item[b"INTERNALDATE"].astimezone(UTC)
        out[item[b"UID"]] = item
    return out


def test_parse_fetch_equals_imapclient_with_and_without_literals() -> None:
    rng = random.Random(5)
    for literal, items in ((False, META[:2]), (True, META)):
        data = fetch_lines(rng, 300, literal=literal)
        got = parse_fetch(data, items)
        assert got is not None and got == reference(data)


def test_items_in_another_order_or_extra_items_go_to_the_complete_parser() -> None:
    data = [b'1 (RFC822.SIZE 10 UID 4 FLAGS (\\Seen) INTERNALDATE "01-Mar-2024 10:00:00 +0100")']
    assert parse_fetch(data, META[:2]) is None
    got = fallback.parse_fetch("acct", data, META[:2], [4])
    assert got == {4: {b"UID": 4, b"RFC822.SIZE": 10,
                       b"INTERNALDATE": datetime(2024, 3, 1, 9, 0, tzinfo=UTC)}}  # fmt: skip


def test_parse_fetch_steps_aside_for_what_it_does_not_know() -> None:
    assert parse_fetch([b"1 (UID 5 RFC822.SIZE 81)"], META[:2]) is None  # an item missing
    assert parse_fetch([b")"], META[:2]) is None
    assert parse_fetch([b"1 (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID)] {3})"], META[2:]) is None
    quoted = [b'1 (UID 5 RFC822.SIZE 1 INTERNALDATE "x\\"y")']  # an escaped quote
    assert parse_fetch(quoted, META[:2]) is None
    assert parse_fetch([], META) == {}


def test_parse_search() -> None:
    assert parse_search([b"4 2 9"]) == [2, 4, 9]
    assert parse_search([b""]) == [] and parse_search([]) == []
    assert parse_search([b"1 2 (MODSEQ 5)"]) is None


def reference_header(raw: bytes, name: str) -> str | None:
    text = raw.decode("utf-8", "replace")
    unfolded = re.sub(r"\r?\n[ \t]+", " ", text)
    prefix = name.lower() + ":"
    for line in unfolded.splitlines():
        if line.lower().startswith(prefix):
            return " ".join(line[len(prefix) :].split()) or None
    return None


def test_header_value_equals_the_general_unfolding_parser() -> None:
    cases = [
        b"Message-ID: <a@b>\r\n\r\n",
        b"message-id:<a@b>\r\n\r\n",
        b"MESSAGE-ID:   <a@b>   \r\n\r\n",
        b"Message-ID:\r\n <folded@x>\r\n\r\n",
        b"Message-ID: <a@b>\r\nMessage-ID: <second@b>\r\n\r\n",
        b"Message-ID:\r\n\r\n",
        b"Message-ID:",
        b"",
        b"\r\n",
        b"Message-ID: <a\x0bb@c>\r\n\r\n",
        b"Message-ID: <\xc3\xa4@c> \xff\r\n\r\n",
        b"X-Other: 1\r\nMessage-ID: <late@x>\r\n\r\n",
        b"Message-ID: <a@b>\n\tcontinued\r\n\r\n",
    ]
    for raw in cases:
        assert header_value(raw, "Message-ID") == reference_header(raw, "Message-ID"), raw
    assert header_value(None, "Message-ID") is None


def test_list_and_status_names_quoted_escaped_and_numeric() -> None:
    lists = [b'(\\HasNoChildren \\Trash) "/" Trash', b'() "/" "a \\"quoted\\" name"',
             b'() "/" 007', b'() NIL "back\\\\slash"', b'() "/" Entw&APw-rfe']  # fmt: skip
    assert parse_list(lists) == [
        ([b"\\HasNoChildren", b"\\Trash"], b"Trash"),
        ([], b'a "quoted" name'),
        ([], b"007"),
        ([], b"back\\slash"),
        ([], b"Entw&APw-rfe"),
    ]
    statuses = [b'"a \\"q\\"" (MESSAGES 3 SIZE 120)', b"007 (SIZE 5 MESSAGES 1)"]
    assert parse_status(statuses) == [
        (b'a "q"', {b"MESSAGES": 3, b"SIZE": 120}),
        (b"007", {b"SIZE": 5, b"MESSAGES": 1}),
    ]
    # literals and extended LIST data are left to imapclient's parser
    assert parse_list([(b'() "/" {3}', b"abc")]) is None
    assert parse_list([b'() "/" INBOX ("CHILDINFO" ("SUBSCRIBED"))']) is None
    assert parse_status([b"X (MESSAGES x)"]) is None


def test_quota_triples() -> None:
    data = [b'"User quota" (STORAGE 10 1024 MESSAGE 3 100)']
    assert parse_quota(data) == [(b"User quota", [("STORAGE", 10, 1024), ("MESSAGE", 3, 100)])]
    assert parse_quota([b'"" (STORAGE 10)']) is None
    assert parse_quota([b"root ()"]) == [(b"root", [])]


def test_uid_ranges() -> None:
    assert uid_ranges([]) == ""
    assert uid_ranges([9, 1, 2, 3, 3, 7, 10]) == "1:3,7,9:10"
    assert uid_ranges([5]) == "5"


def test_response_code_of_a_tagged_answer() -> None:
    caps = "[CAPABILITY IMAP4rev1 SASL-IR QUOTA] Logged in"
    assert response_code(caps, b"CAPABILITY") == [b"IMAP4rev1 SASL-IR QUOTA"]
    assert response_code("[capability IMAP4rev1] ok", b"CAPABILITY") == [b"IMAP4rev1"]
    assert response_code("Logged in", b"CAPABILITY") == []
    assert response_code("[CAPABILITYX a] no", b"CAPABILITY") == []
    assert response_code("[CAPABILITY unterminated", b"CAPABILITY") == []
