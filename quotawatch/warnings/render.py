"""Render warning mails and the admin digest from plain data: plain text plus escaped HTML."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from quotawatch.model import FolderInfo
from quotawatch.text import clean, table
from quotawatch.units import format_percent, format_size
from quotawatch.warnings.templates import TEXTS

MAX_FOLDERS = 5
TRASH_NAMES = {"trash", "deleted items", "deleted messages", "papierkorb", "gelöschte elemente"}
JUNK_NAMES = {"junk", "spam", "junk e-mail", "junk-e-mail"}


@dataclass(frozen=True)
class Freeable:
    """What one retention rule will free at the next cleanup."""

    rule: str
    folders: tuple[str, ...]
    messages: int
    bytes: int


@dataclass(frozen=True)
class MailContent:
    """Everything a warning mail says, in plain data."""

    kind: str  # warning | reminder | all_clear
    account: str
    threshold: str | None
    ratio: float
    used_bytes: int | None = None
    limit_bytes: int | None = None
    #: set when the fullest resource is the message count: (messages, limit)
    messages: tuple[int, int] | None = None
    folders: tuple[FolderInfo, ...] = ()
    freeable: tuple[Freeable, ...] = ()
    freeable_total: int = 0
    days_until_full: float | None = None
    remind_every: timedelta | None = None


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: tuple[int, ...]


Block = Para | Items | Table


def size(n: float, lang: str) -> str:
    text = format_size(n)
    return text.replace(".", ",") if lang == "de" else text


def percent(ratio: float, lang: str) -> str:
    """``79.9 %`` as everywhere else (``79,9 %`` in German)."""
    text = format_percent(ratio)
    return text.replace(".", ",") if lang == "de" else text


def threshold_label(label: str, lang: str) -> str:
    """A threshold label (``80%``, ``92.5%``) written like every other percentage."""
    text = label.replace("%", " %")
    return text.replace(".", ",") if lang == "de" else text


def number(n: int, lang: str) -> str:
    text = f"{n:,}"
    return text.replace(",", ".") if lang == "de" else text


def every(delta: timedelta, t: dict[str, str]) -> str:
    """``every 7 days`` / ``alle 7 Tage``; hours when not a whole number of days."""
    hours = delta.total_seconds() / 3600
    if hours < 24 or hours % 24:
        return t["every.hours"].format(n=round(hours))
    days = round(hours / 24)
    return t["every.day"] if days == 1 else t["every.days"].format(n=days)


def folder_name(folder: FolderInfo | str, t: dict[str, str]) -> str:
    """The name a mail client shows: INBOX translated, the rest as decoded from the server."""
    name = folder if isinstance(folder, str) else folder.name
    return t["inbox"] if name.upper() == "INBOX" else clean(name)


def quoted(name: str, lang: str) -> str:
    return f"„{name}“" if lang == "de" else f'"{name}"'


def _kind_of(folder: FolderInfo) -> str | None:
    short = folder.name.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
    if folder.special_use == "\\Trash" or short in TRASH_NAMES:
        return "trash"
    if folder.special_use == "\\Junk" or short in JUNK_NAMES:
        return "junk"
    return None


def _intro(c: MailContent, lang: str) -> str:
    t = TEXTS[lang]
    pct = percent(c.ratio, lang)
    if c.messages is not None:
        used, limit = number(c.messages[0], lang), number(c.messages[1], lang)
        return t["intro.messages"].format(account=c.account, percent=pct, used=used, limit=limit)
    used_b, limit_b = c.used_bytes or 0, c.limit_bytes or 0
    return t["intro"].format(
        account=c.account,
        percent=pct,
        used=size(used_b, lang),
        limit=size(limit_b, lang),
        free=size(max(0, limit_b - used_b), lang),
    )


def _forecast(days: float | None, t: dict[str, str]) -> list[Block]:
    if days is None:
        return []
    if days < 1:
        return [Para(t["forecast.soon"])]
    n = round(days)
    return [Para(t["forecast"].format(days=t["day"] if n == 1 else t["days"].format(n=n)))]


def _folders(c: MailContent, lang: str) -> list[Block]:
    t = TEXTS[lang]
    shown = [f for f in c.folders if f.size_bytes > 0][:MAX_FOLDERS]
    if not shown:
        return []
    rows = tuple(
        (
            folder_name(f, t),
            size(f.size_bytes, lang),
            percent(f.size_bytes / c.limit_bytes, lang) if c.limit_bytes else "-",
        )
        for f in shown
    )
    headers = (t["col.folder"], t["col.size"], t["col.share"])
    return [Para(t["folders"]), Table(headers, rows, (1, 2))]


def _cleanup(c: MailContent, lang: str) -> list[Block]:
    t = TEXTS[lang]
    if c.freeable_total <= 0:
        return []
    items = tuple(
        t["cleanup.rule"].format(
            rule=clean(f.rule),
            messages=number(f.messages, lang),
            size=size(f.bytes, lang),
            folders=", ".join(quoted(folder_name(x, t), lang) for x in f.folders),
        )
        for f in c.freeable
    )
    blocks: list[Block] = [Para(t["cleanup"].format(size=size(c.freeable_total, lang)))]
    return blocks + ([Items(items)] if items else [])


def _todo(c: MailContent, lang: str) -> list[Block]:
    t = TEXTS[lang]
    todo = [
        t[f"todo.{kind}"].format(folder=folder_name(f, t), size=size(f.size_bytes, lang))
        for f in c.folders
        if (kind := _kind_of(f)) is not None and f.size_bytes > 0
    ]
    large = [folder_name(f, t) for f in c.folders if _kind_of(f) is None and f.size_bytes > 0]
    if large:
        todo.append(t["todo.large"].format(folders=", ".join(quoted(x, lang) for x in large[:2])))
    return [Para(t["todo"]), Items(tuple(todo))] if todo else []


def _footer(c: MailContent, lang: str) -> list[Block]:
    t = TEXTS[lang]
    if c.kind == "all_clear" or c.threshold is None:
        return [Para(t["footer.auto"])]
    if c.threshold.endswith(" free"):
        why = t["why.free"].format(size=c.threshold.removesuffix(" free"))
    else:
        why = t["why.ratio"].format(threshold=threshold_label(c.threshold, lang))
    text = t["footer"].format(why=why)
    if c.remind_every is not None:
        text += " " + t["footer.remind"].format(every=every(c.remind_every, t))
    return [Para(text + " " + t["noreply"])]


def blocks(c: MailContent, lang: str) -> list[Block]:
    """The mail as paragraphs, lists and tables, shared by the text and the HTML part."""
    t = TEXTS[lang]
    if c.kind == "all_clear":
        intro = t["intro.all_clear"].format(account=c.account, percent=percent(c.ratio, lang))
        return [Para(t["hello"]), Para(intro), *_footer(c, lang)]
    return [
        Para(t["hello"]),
        Para(_intro(c, lang) + " " + t["bounce"]),
        *_forecast(c.days_until_full, t),
        *_folders(c, lang),
        *_cleanup(c, lang),
        *_todo(c, lang),
        *_footer(c, lang),
    ]


def to_text(parts: Sequence[Block]) -> str:
    out: list[str] = []
    for b in parts:
        if isinstance(b, Para):
            out.append(textwrap.fill(b.text, 72))
        elif isinstance(b, Items):
            out.append(
                "\n".join(
                    textwrap.fill(v, 72, initial_indent="  - ", subsequent_indent="    ")
                    for v in b.items
                )
            )
        else:
            out.append(table(b.headers, b.rows, b.right, indent="  "))
    return "\n\n".join(out) + "\n"


def _cell(tag: str, value: str, right: bool) -> str:
    align = "right" if right else "left"
    return f'<{tag} style="text-align:{align};padding:2px 8px">{html.escape(value)}</{tag}>'


def to_html(parts: Sequence[Block], lang: str) -> str:
    """The same blocks as HTML; every text is escaped."""
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{html.escape(lang)}"><head><meta charset="utf-8"></head><body>',
    ]
    for b in parts:
        if isinstance(b, Para):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Items):
            out.append("<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in b.items) + "</ul>")
        else:
            head = "".join(_cell("th", h, i in b.right) for i, h in enumerate(b.headers))
            body = "".join(
                "<tr>" + "".join(_cell("td", v, i in b.right) for i, v in enumerate(r)) + "</tr>"
                for r in b.rows
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render(c: MailContent, lang: str) -> Rendered:
    """Subject, plain text and HTML of one warning, reminder or all-clear mail."""
    t = TEXTS[lang]
    subject = t[f"subject.{c.kind}"].format(account=c.account, percent=percent(c.ratio, lang))
    parts = blocks(c, lang)
    return Rendered(clean(subject), to_text(parts), to_html(parts, lang))


DigestRow = tuple[str, float, int | None, int | None, str]


def render_digest(rows: Sequence[DigestRow], lang: str) -> Rendered:
    """The admin digest: (account, ratio, used bytes, limit bytes, highest threshold) per row."""
    t = TEXTS[lang]
    table_rows = tuple(
        (
            clean(name),
            percent(ratio, lang),
            size(used, lang) if used is not None else "-",
            size(limit, lang) if limit is not None else "-",
            threshold_label(label, lang),
        )
        for name, ratio, used, limit, label in rows
    )
    headers = (t["col.account"], "%", t["col.used"], t["col.limit"], t["col.threshold"])
    parts: list[Block] = [Para(t["digest.intro"]), Table(headers, table_rows, (1, 2, 3))]
    subject = t["digest.subject"].format(count=len(rows))
    return Rendered(clean(subject), to_text(parts), to_html(parts, lang))
