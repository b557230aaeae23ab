"""Why a rule selected nothing in a folder, in one line ("Trash: 12 messages, none in this folder
for 30 days"; "INBOX: 40 candidates, all unseen"), over plain data."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from quotawatch.config import Rule
from quotawatch.mail.session import FolderSelection
from quotawatch.units import format_size

_AGE_WORDS = {
    "saved": "in this folder for {}",
    "received": "received more than {} ago",
    "sent": "sent more than {} ago",
}


def _days(delta: timedelta) -> str:
    days, rest = divmod(int(delta.total_seconds()), 86400)
    if rest:
        hours = round(delta.total_seconds() / 3600)
        return "1 hour" if hours == 1 else f"{hours} hours"
    return "1 day" if days == 1 else f"{days} days"


def criteria(rule: Rule) -> str:
    """What a message must be for ``rule``: ``in this folder for 30 days and larger than 5.0 MiB``."""
    parts = []
    age = max(rule.older_than or timedelta(0), rule.keep_newer_than)
    if age > timedelta(0):
        parts.append(_AGE_WORDS[rule.age].format(_days(age)))
    if rule.larger_than is not None:
        parts.append(f"larger than {format_size(rule.larger_than)}")
    return " and ".join(parts) or "selected"


def count(n: int, word: str) -> str:
    return f"1 {word}" if n == 1 else f"{n} {word}s"


def why_nothing(name: str, rule: Rule, fs: FolderSelection, taken: Collection[Any]) -> list[str]:
    """The note for a folder where ``rule`` planned nothing (pure; ``taken`` as the planner's)."""
    if fs.notes:
        return [f"rule {name}: {n}" for n in fs.notes]
    if not fs.total_messages:
        return []
    free = [c for c in fs.candidates if (fs.folder, fs.uidvalidity, c.uid) not in taken]
    if fs.candidates and not free:
        many = count(len(fs.candidates), "candidate")
        return [f"rule {name}: {fs.folder}: {many}, all planned by an earlier rule"]
    return [
        f"rule {name}: {fs.folder}: {count(fs.total_messages, 'message')}, none {criteria(rule)}"
    ]
