"""Plain frozen data passed between layers: quota, folders, snapshots and account reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: the special-use mailbox flags (RFC 6154) quotawatch knows, in their canonical spelling
SPECIAL_USE_FLAGS = (
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Important", "\\Junk", "\\Sent", "\\Trash",
)  # fmt: skip
#: special-use folders that are views onto other folders (RFC 6154, RFC 8457): never a
#: retention target, since removing a message there removes it from INBOX or wherever it is
VIRTUAL_FLAGS = ("\\All", "\\Flagged", "\\Important")
#: Gmail's views, known by name for a server that does not announce SPECIAL-USE (lower case)
VIRTUAL_NAMES = frozenset(
    f"[{service}]/{view}"
    for service in ("gmail", "google mail")
    for view in ("all mail", "important", "starred")
)


_SPECIAL_USE_BY_LOWER = {f.lower(): f for f in SPECIAL_USE_FLAGS}


def special_use(flag: str) -> str | None:
    """The canonical spelling of a special-use flag (any case), or None if it is not one."""
    return _SPECIAL_USE_BY_LOWER.get(flag.lower())


@dataclass(frozen=True, slots=True)
class QuotaResource:
    """One resource of one quota root. STORAGE is in bytes; other resources are counts."""

    root: str
    resource: str
    usage: int
    limit: int

    @property
    def ratio(self) -> float | None:
        return self.usage / self.limit if self.limit > 0 else None


@dataclass(frozen=True)
class FolderInfo:
    """A folder with its message count and total size in bytes."""

    name: str
    messages: int
    size_bytes: int
    special_use: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What one check saw of one account."""

    account: str
    protocol: str
    taken_at: datetime
    quota: tuple[QuotaResource, ...]
    folders: tuple[FolderInfo, ...]
    notes: tuple[str, ...] = ()
    #: where the quota numbers came from: "" = this session's protocol, or "doveadm"
    quota_origin: str = ""
    #: when stored folders were read over the mail protocol (None: read in this check)
    folders_at: datetime | None = None

    def origin(self) -> dict[str, Any]:
        """Where each number came from (``check --json``'s ``origin``)."""
        stored = self.folders_at is not None and bool(self.folders)
        return {
            "quota": self.quota_origin or self.protocol,
            "folders": "stored" if stored else (None if self.quota_origin else self.protocol),
            "folders_checked_at": self.folders_at.isoformat()
            if stored and self.folders_at
            else None,
        }

    def fullest(self) -> QuotaResource | None:
        """The quota resource with the highest usage ratio, or None without a limited quota."""
        limited = [q for q in self.quota if q.limit > 0]
        return max(limited, key=lambda q: q.usage / q.limit) if limited else None

    @property
    def usage_ratio(self) -> float | None:
        q = self.fullest()
        return None if q is None else q.usage / q.limit

    def storage(self) -> QuotaResource | None:
        return next((q for q in self.quota if q.resource == "STORAGE" and q.limit > 0), None)

    def folders_by_size(self) -> list[FolderInfo]:
        return sorted(self.folders, key=lambda f: (-f.size_bytes, f.name))


@dataclass(frozen=True)
class AccountReport:
    """The outcome of checking one account: a snapshot, or the error that prevented it."""

    name: str
    protocol: str
    snapshot: Snapshot | None = None
    error: str | None = None
    reason: str | None = None
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The ``check --json`` shape of one account."""
        snap = self.snapshot
        out: dict[str, Any] = {
            "name": self.name,
            "protocol": self.protocol,
            "ok": self.ok,
            "error": self.error,
            "quota": [
                {"root": q.root, "resource": q.resource, "usage": q.usage, "limit": q.limit}
                for q in (snap.quota if snap else ())
            ],
            "folders": [
                {
                    "name": f.name,
                    "messages": f.messages,
                    "size_bytes": f.size_bytes,
                    "special_use": f.special_use,
                }
                for f in (snap.folders_by_size() if snap else ())
            ],
        }
        out["usage_ratio"] = snap.usage_ratio if snap else None
        out["notes"] = list(snap.notes) if snap else []
        out["origin"] = snap.origin() if snap else None
        out["reason"] = self.reason
        return out


Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the default ``Clock``)."""
    return datetime.now(UTC)
