"""Deterministic, realistic-looking RFC 5322 messages for the sandbox and tests.

Everything is driven by a caller-supplied :class:`random.Random`, so a fixed seed
gives byte-identical messages. Only reserved example domains (example.com/.net/.org)
and documentation addresses (192.0.2.0/24) appear in the messages.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime

__all__ = ["Person", "make_message", "plan_sizes", "random_date"]

Person = tuple[str, str]  # (display name, address)

PEOPLE: tuple[Person, ...] = (
    ("Alice Example", "alice@example.org"),
    ("Bob Builder", "bob@example.org"),
    ("Carol Jones", "carol@example.org"),
    ("Dave Miller", "dave@example.com"),
    ("Erika Mustermann", "erika@example.net"),
    ("Frank Zhang", "frank@example.com"),
    ("Grace Hopper", "grace@example.net"),
    ("Jürgen Weiß", "juergen@example.net"),
    ("Heidi Klum", "heidi@example.com"),
    ("Ivan Petrov", "ivan@example.com"),
    ("Newsletter", "news@lists.example.com"),
    ("Billing", "billing@shop.example.com"),
)

_WORD_TEXT = """the a and of to in for on with as by at from we you they it is are was be have has will
    would can could should please thanks regards project meeting report invoice budget quarter
    review draft update schedule release customer server mailbox quota storage backup archive
    monday tuesday friday morning afternoon deadline team plan proposal contract offer order
    delivery payment account ticket issue feature test result summary notes agenda attached
    document spreadsheet presentation slides feedback question answer request approval"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

SUBJECTS: dict[str, tuple[str, ...]] = {
    "inbox": (
        "Project {word} status update",
        "Re: Meeting notes {n}",
        "Invoice {n} for your order",
        "Your ticket #{n} has been updated",
        "Weekly report week {week}",
        "Lunch on {day}?",
        "Re: Re: {word} proposal",
        "Fwd: {word} documents",
        "Reminder: {word} deadline",
        "Photos from the {word} trip",
    ),
    "sent": (
        "Re: Project {word} status update",
        "Re: Invoice {n}",
        "Agenda for {day}",
        "Re: {word} question",
        "Slides for the {word} review",
    ),
    "junk": (
        "You have won a {word} voucher!!!",
        "Urgent: verify your {word} account",
        "Cheap {word} deals only today",
        "Re: your parcel {n} is waiting",
        "Congratulations, winner #{n}",
    ),
    "drafts": (
        "Entwurf: Angebot für {word}",
        "Notizen zur Besprechung am {day}",
        "Grüße aus München",
        "Änderungswünsche {n}",
    ),
}

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def random_date(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A uniformly random second in [start, end)."""
    span = int((end - start).total_seconds())
    return start + timedelta(seconds=rng.randrange(max(span, 1)))


def plan_sizes(rng: random.Random, count: int, total: int, lo: int, hi: int) -> list[int]:
    """*count* log-normally spread sizes in [lo, hi] that add up to about *total*."""
    raw = [rng.lognormvariate(0.0, 0.9) for _ in range(count)]
    scale = total / sum(raw)
    sizes = [lo] * count
    for _ in range(40):
        sizes = [min(hi, max(lo, int(r * scale))) for r in raw]
        got = sum(sizes)
        if abs(got - total) <= total * 0.001:
            break
        scale *= total / got
    return sizes


def _subject(rng: random.Random, kind: str) -> str:
    template = rng.choice(SUBJECTS[kind])
    return template.format(
        word=rng.choice(WORDS[20:]),
        n=rng.randrange(1000, 99999),
        week=rng.randrange(1, 53),
        day=rng.choice(DAYS),
    )


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def _address(person: Person) -> str:
    name, addr = person
    return f"{_encode_header(name)} <{addr}>"


def _text_lines(rng: random.Random, budget: int) -> list[str]:
    """Plain-text paragraphs of roughly *budget* bytes (CRLF counted)."""
    lines: list[str] = []
    used = 0
    while used < budget:
        words = [rng.choice(WORDS) for _ in range(rng.randrange(6, 13))]
        line = " ".join(words).capitalize() + "."
        if rng.random() < 0.15:
            line = ""
        lines.append(line)
        used += len(line) + 2
    return lines


def make_message(
    rng: random.Random,
    *,
    size: int,
    date: datetime,
    sender: Person,
    recipient: Person,
    kind: str = "inbox",
    subject: str | None = None,
) -> bytes:
    """One CRLF-terminated RFC 5322 message of about *size* bytes.

    Messages above ~12 KB usually carry a base64 attachment, like real mail does.
    *kind* picks the subject style: ``inbox``, ``sent``, ``junk`` or ``drafts``.
    """
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    subject = subject if subject is not None else _subject(rng, kind)
    msgid = f"<{rng.getrandbits(64):016x}.{rng.getrandbits(32):08x}@{sender[1].split('@')[1]}>"
    sent_at = date - timedelta(seconds=rng.randrange(2, 300))
    headers = [
        f"Return-Path: <{sender[1]}>",
        "Received: from mx.example.com (mx.example.com [192.0.2.25])",
        f"\tby mail.example.org with ESMTPS id {rng.getrandbits(40):010X}",
        f"\tfor <{recipient[1]}>; {format_datetime(date)}",
        f"Message-ID: {msgid}",
        f"Date: {format_datetime(sent_at)}",
        f"From: {_address(sender)}",
        f"To: {_address(recipient)}",
        f"Subject: {_encode_header(subject)}",
        "MIME-Version: 1.0",
    ]
    head_len = sum(len(h) + 2 for h in headers) + 120
    with_attachment = size > 12_000 and rng.random() < 0.7
    if not with_attachment:
        headers += [
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 8bit",
        ]
        body = _text_lines(rng, max(size - head_len, 40))
        return ("\r\n".join([*headers, "", *body]) + "\r\n").encode()

    boundary = f"=_qw_{rng.getrandbits(48):012x}"
    text = _text_lines(rng, rng.randrange(300, 2500))
    attach_budget = max(size - head_len - sum(len(t) + 2 for t in text) - 400, 100)
    raw_len = attach_budget * 76 // 78 * 3 // 4
    encoded = base64.b64encode(rng.randbytes(raw_len)).decode()
    chunks = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    filename = rng.choice(("report", "scan", "invoice", "photo", "slides")) + rng.choice(
        (".pdf", ".jpg", ".xlsx", ".zip")
    )
    headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    parts: Sequence[str] = [
        *headers,
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        *text,
        "",
        f"--{boundary}",
        f'Content-Type: application/octet-stream; name="{filename}"',
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{filename}"',
        "",
        *chunks,
        "",
        f"--{boundary}--",
    ]
    return ("\r\n".join(parts) + "\r\n").encode()
