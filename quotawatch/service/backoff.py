"""Backoff of accounts whose logins fail (auth) or whose server asks to retry later, kept in State."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quotawatch.config import Account
from quotawatch.state import State

#: failures that may lock an account out (or that the server asks us to retry later)
BACKOFF_REASONS = frozenset({"auth", "temporary"})
BACKOFF_CAP = timedelta(hours=24)


def backoff_delay(failures: int, interval: timedelta, cap: timedelta = BACKOFF_CAP) -> timedelta:
    """Wait after the n-th failure in a row: 2, 4, 8 ... intervals, at most ``cap`` (24h)."""
    return max(interval, min(interval * (1 << min(failures, 32)), cap))


def fingerprint(account: Account) -> str:
    """Changes when the account's settings or its password file change, which ends a backoff."""
    parts = [account.model_dump_json()]
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    source = account.password_file or (
        Path(directory) / account.password_credential
        if directory and account.password_credential else None
    )  # fmt: skip
    if source is not None:
        try:
            parts.append(str(Path(source).stat().st_mtime_ns))
        except OSError:
            parts.append("missing")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Backoff:
    """An account's run of auth/temporary failures, kept in State so a restart does not reset it."""

    failures: int
    until: datetime
    reason: str
    fingerprint: str

    @staticmethod
    def load(state: State, account: str, current: str | Callable[[], str]) -> Backoff | None:
        """The stored backoff, or None when there is none or the account has changed since.
        ``current`` may be a function computing the fingerprint, called only if one is stored."""
        raw = state.get(f"backoff:{account}")
        if not raw:
            return None
        data = json.loads(raw)
        if callable(current):
            current = current()
        if not data or data.get("fingerprint") != current:
            return None
        until = datetime.fromtimestamp(data["until"], UTC)
        return Backoff(int(data["failures"]), until, str(data["reason"]), current)

    def save(self, state: State, account: str) -> None:
        data = {"failures": self.failures, "until": self.until.timestamp(),
                "reason": self.reason, "fingerprint": self.fingerprint}  # fmt: skip
        state.put(f"backoff:{account}", json.dumps(data))

    @staticmethod
    def clear(state: State, account: str) -> None:
        state.put(f"backoff:{account}", "")
