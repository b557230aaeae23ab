"""Persistent state in SQLite: last reports, usage history, first-seen times, warning state."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS reports (
        account TEXT PRIMARY KEY, taken_at REAL NOT NULL, ok INTEGER NOT NULL, data TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS usage_history (
        account TEXT NOT NULL, at REAL NOT NULL, usage INTEGER NOT NULL, "limit" INTEGER NOT NULL,
        resource TEXT NOT NULL, PRIMARY KEY (account, at))""",
    """CREATE TABLE IF NOT EXISTS first_seen (
        account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid TEXT NOT NULL,
        seen_at REAL NOT NULL, PRIMARY KEY (account, folder, uidvalidity, uid)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS warning_state (
        account TEXT PRIMARY KEY, data TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
]

HISTORY_KEEP = timedelta(days=120)


def _ts(when: datetime) -> float:
    if when.tzinfo is None:
        raise ValueError("naive datetime passed to state")
    return when.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class State:
    """One SQLite database in ``state_dir``; safe to share between threads."""

    def __init__(self, state_dir: Path | str) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "state.sqlite3"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for stmt in SCHEMA:
            self._db.execute(stmt)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ reports and history
    def save_report(
        self,
        account: str,
        taken_at: datetime,
        ok: bool,
        data: dict[str, Any],
        usage: tuple[int, int, str] | None = None,
    ) -> None:
        """Store an account's latest report (JSON) and, if given, a usage history point."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?)",
                (account, _ts(taken_at), int(ok), json.dumps(data)),
            )
            if usage is not None:
                db.execute(
                    "INSERT OR REPLACE INTO usage_history VALUES (?, ?, ?, ?, ?)",
                    (account, _ts(taken_at), usage[0], usage[1], usage[2]),
                )
                db.execute(
                    "DELETE FROM usage_history WHERE account = ? AND at < ?",
                    (account, _ts(taken_at - HISTORY_KEEP)),
                )

    def last_reports(self) -> dict[str, tuple[datetime, bool, dict[str, Any]]]:
        return {
            a: (_dt(t), bool(ok), json.loads(d))
            for a, t, ok, d in self._query("SELECT account, taken_at, ok, data FROM reports")
        }

    def last_report(self, account: str) -> tuple[datetime, bool, dict[str, Any]] | None:
        rows = self._query("SELECT taken_at, ok, data FROM reports WHERE account = ?", (account,))
        return (_dt(rows[0][0]), bool(rows[0][1]), json.loads(rows[0][2])) if rows else None

    def usage_history(
        self, account: str, since: datetime | None = None
    ) -> list[tuple[datetime, int, int]]:
        """(time, usage, limit) points of the account's fullest resource, oldest first."""
        rows = self._query(
            'SELECT at, usage, "limit" FROM usage_history WHERE account = ? AND at >= ? ORDER BY at',
            (account, _ts(since) if since else 0.0),
        )
        return [(_dt(at), u, lim) for at, u, lim in rows]

    def forget_accounts(self, keep: Iterable[str]) -> None:
        """Drop reports of accounts no longer configured (history and first-seen stay)."""
        keep_set = set(keep)
        with self.transaction() as db:
            for (account,) in db.execute("SELECT account FROM reports").fetchall():
                if account not in keep_set:
                    db.execute("DELETE FROM reports WHERE account = ?", (account,))

    # ------------------------------------------------------------------ first seen
    def first_seen(
        self, account: str, folder: str, uidvalidity: int, uids: Sequence[int | str], now: datetime
    ) -> dict[int | str, datetime]:
        """When quotawatch first saw each UID in this folder; new UIDs are recorded as seen ``now``.

        Records of UIDs no longer in the folder (at any UIDVALIDITY) are dropped, so the table
        holds one row per message currently on the server.
        """
        keys = {str(u): u for u in uids}
        with self.transaction() as db:
            rows = db.execute(
                "SELECT uidvalidity, uid, seen_at FROM first_seen WHERE account = ? AND folder = ?",
                (account, folder),
            ).fetchall()
            known: dict[str, float] = {}
            stale = []
            for validity, uid, seen_at in rows:
                if validity == uidvalidity and uid in keys:
                    known[uid] = seen_at
                else:
                    stale.append((account, folder, validity, uid))
            if stale:
                db.executemany(
                    "DELETE FROM first_seen WHERE account = ? AND folder = ? AND "
                    "uidvalidity = ? AND uid = ?",
                    stale,
                )
            now_ts = _ts(now)
            new = [(account, folder, uidvalidity, k, now_ts) for k in keys if k not in known]
            if new:
                db.executemany("INSERT INTO first_seen VALUES (?, ?, ?, ?, ?)", new)
                known.update({row[3]: now_ts for row in new})
        return {keys[k]: _dt(v) for k, v in known.items()}

    # ------------------------------------------------------------------ clock evidence
    def clock_evidence(self, account: str) -> tuple[datetime | None, datetime | None]:
        """(newest arrival stamp seen, local time of the last run with a plausible clock)."""
        raw = self.get(f"clock:{account}")
        data = json.loads(raw) if raw else {}

        def at(key: str) -> datetime | None:
            value = data.get(key)
            return _dt(value) if isinstance(value, int | float) else None

        return at("newest_stamp"), at("last_run")

    def set_clock_evidence(
        self, account: str, newest_stamp: datetime | None, last_run: datetime | None
    ) -> None:
        data = {
            "newest_stamp": _ts(newest_stamp) if newest_stamp else None,
            "last_run": _ts(last_run) if last_run else None,
        }
        self.put(f"clock:{account}", json.dumps(data))

    # ------------------------------------------------------------------ warning state
    def warning_state(self, account: str) -> dict[str, Any] | None:
        rows = self._query("SELECT data FROM warning_state WHERE account = ?", (account,))
        return json.loads(rows[0][0]) if rows else None

    def set_warning_state(self, account: str, data: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO warning_state VALUES (?, ?)", (account, json.dumps(data))
            )

    # ------------------------------------------------------------------ small values
    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
