"""Persistent state in SQLite: last reports, usage history, first-seen times, warning state."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.totals import Inexact, Part, Totals, rounded

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
    # one compact row per account for /metrics: a scrape reads numbers, not stored reports
    """CREATE TABLE IF NOT EXISTS metric_rows (
        account TEXT PRIMARY KEY, checked_at REAL NOT NULL, ok INTEGER NOT NULL, reason TEXT,
        last_success REAL, duration REAL, ratio REAL, used_bytes INTEGER, limit_bytes INTEGER,
        pending_bytes INTEGER, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS metric_rows_ratio ON metric_rows (ratio)",
    # the oldest check (the lag gauge) as one index lookup, not a pass over every row
    "CREATE INDEX IF NOT EXISTS metric_rows_checked ON metric_rows (checked_at)",
    # with the ratio index, "ratio >= ? OR ok = 0" (per_account: above) reads only those rows
    "CREATE INDEX IF NOT EXISTS metric_rows_failing ON metric_rows (ok) WHERE ok = 0",
    # the source and mail host of each configured account, rewritten at start-up and reload
    # (a table of its own: an older state database just gains it, its rows stay as they are)
    """CREATE TABLE IF NOT EXISTS account_groups (
        account TEXT PRIMARY KEY, source TEXT NOT NULL, host TEXT NOT NULL) WITHOUT ROWID""",
]

#: the columns of a metric row, in order (see ``metric_row``)
ROW_COLUMNS = (
    "account", "checked_at", "ok", "reason", "last_success", "duration", "ratio", "used_bytes",
    "limit_bytes", "pending_bytes", "detail",
)  # fmt: skip


def metric_row(account: str, taken_at: float, ok: bool, data: dict[str, Any]) -> tuple[Any, ...]:
    """The compact metrics row of a stored report: numbers, plus quota and folders as JSON."""
    storage = [q for q in data.get("quota") or () if str(q.get("resource")).upper() == "STORAGE"]
    used = sum(int(q["usage"]) for q in storage) if storage else None
    limit = sum(int(q["limit"]) for q in storage if q["limit"] > 0) if storage else None
    detail = json.dumps({"quota": data.get("quota") or [], "folders": data.get("folders") or []})
    return (account, taken_at, int(ok), data.get("reason"), data.get("last_success"),
            data.get("duration_seconds"), data.get("usage_ratio"), used, limit or None,
            data.get("pending_bytes"), detail)  # fmt: skip


HISTORY_KEEP = timedelta(days=120)


@dataclass(frozen=True)
class FleetSummary:
    """Aggregates over every account's metric row (``State.fleet_summary``)."""

    at_or_below: tuple[int, ...]  # accounts with a ratio at or below each bound
    count: int  # accounts with a ratio
    ratio_sum: float
    used_bytes: float
    limit_bytes: float
    oldest_check: float | None
    rows: int
    failing: dict[str, int]  # reason -> accounts whose last check failed


@dataclass(frozen=True)
class SourceSummary:
    """Aggregates over the configured accounts of one source and mail host
    (``State.source_summaries``)."""

    source: str
    host: str
    configured: int
    checked: int  # accounts with a metric row
    at_or_below: tuple[int, ...]  # accounts with a ratio at or below each bound
    count: int  # accounts with a ratio
    ratio_sum: float
    used_bytes: float
    limit_bytes: float
    exported: int  # accounts at or above the level, or failing (per_account: above)
    failing: dict[str, int]  # reason -> accounts whose last check failed


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
        #: the aggregates ``keep_totals`` asked for, updated where a metric row is written;
        #: None until built, and again after a write they do not follow (``transaction``)
        self._totals: Totals | None = None
        self._want: tuple[tuple[float, ...], float | None] | None = None
        self._version = -1  # PRAGMA data_version when they were built
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for stmt in SCHEMA:
            self._db.execute(stmt)
        self._fill_metric_rows()

    def _fill_metric_rows(self) -> None:
        """Rows for reports stored before metric_rows existed (once, on an upgrade)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM metric_rows LIMIT 1").fetchone():
                return
            rows = self._db.execute("SELECT account, taken_at, ok, data FROM reports").fetchall()
            if rows:
                with self.transaction() as db:
                    db.executemany(
                        "INSERT OR REPLACE INTO metric_rows VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        [metric_row(a, t, bool(ok), json.loads(d)) for a, t, ok, d in rows],
                    )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction for anything; the kept aggregates are rebuilt after it."""
        with self._lock, self._write() as db:
            self._totals = None
            yield db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
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
        with self._lock:
            old = self._part(account) if self._totals is not None else None
            self._save(account, taken_at, ok, data, usage)
            self._follow(account, old)

    def _save(
        self,
        account: str,
        taken_at: datetime,
        ok: bool,
        data: dict[str, Any],
        usage: tuple[int, int, str] | None,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?)",
                (account, _ts(taken_at), int(ok), json.dumps(data)),
            )
            db.execute(
                "INSERT OR REPLACE INTO metric_rows VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                metric_row(account, _ts(taken_at), ok, data),
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
        with self._lock:
            gone = [a for (a,) in self._query("SELECT account FROM reports") if a not in keep_set]
            olds = [(account, self._part(account)) for account in gone]
            with self._write() as db:
                for account in gone:
                    db.execute("DELETE FROM reports WHERE account = ?", (account,))
                    db.execute("DELETE FROM metric_rows WHERE account = ?", (account,))
            for account, old in olds:
                self._follow(account, old)

    # ------------------------------------------------------------------ metric rows
    def metric_rows(self, above: float | None = None) -> list[tuple[Any, ...]]:
        """Rows (``ROW_COLUMNS``) of every account, or only of those at or above ``above``
        usage or failing (what ``metrics.per_account: above`` exports)."""
        if above is None:
            return self._query("SELECT * FROM metric_rows")
        return self._query("SELECT * FROM metric_rows WHERE ratio >= ? OR ok = 0", (above,))

    def keep_totals(self, bounds: Sequence[float], level: float | None) -> None:
        """Keep ``fleet_summary(bounds)`` and ``source_summaries(bounds, level)`` in memory from
        now on, updated where a metric row is written, so a scrape does not pass over every row
        (other arguments still get the SQL ones). Built at the next ``set_account_groups`` or
        summary."""
        with self._lock:
            want = (tuple(bounds), level)
            if want != self._want:
                self._want, self._totals = want, None

    def _part(self, account: str) -> Part | None:
        rows = self._db.execute(
            "SELECT ok, reason, ratio, used_bytes, limit_bytes FROM metric_rows WHERE account = ?",
            (account,),
        ).fetchall()
        return rows[0] if rows else None

    def _follow(self, account: str, old: Part | None) -> None:
        """Carry one account's row change (``old`` -> what is stored now) into the kept
        aggregates: two index lookups, whatever the number of accounts. Under the lock."""
        if self._totals is None:
            return
        if self._db.execute("PRAGMA data_version").fetchone()[0] != self._version:
            self._totals = None  # another process wrote (maybe the groups): rebuilt when read
            return
        group = self._db.execute(
            "SELECT source, host FROM account_groups WHERE account = ?", (account,)
        ).fetchall()
        try:
            self._totals.update(old, group[0] if group else None, self._part(account))
        except (Inexact, KeyError):  # a number the exact sums cannot carry, an unknown group
            self._totals = None

    def _rebuild(self) -> None:
        """Build the kept aggregates from every row, in one read transaction. Under the lock."""
        self._totals = None
        if self._want is None:
            return
        bounds, level = self._want
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        own = not self._db.in_transaction
        if own:
            self._db.execute("BEGIN")
        try:
            configured = self._db.execute(
                "SELECT source, host, COUNT(*) FROM account_groups GROUP BY 1, 2"
            ).fetchall()
            rows = self._db.execute(
                "SELECT m.ok, m.reason, m.ratio, m.used_bytes, m.limit_bytes, g.source, g.host "
                "FROM metric_rows m LEFT JOIN account_groups g ON g.account = m.account"
            )
            self._totals = Totals.build(bounds, level, rows, configured)
        except Inexact:
            pass  # a number the exact sums cannot carry: the SQL ones until it is gone
        finally:
            if own:
                self._db.execute("COMMIT")
        self._version = version

    def _kept(self, bounds: Sequence[float]) -> Totals | None:
        """The kept aggregates if they are for ``bounds``, rebuilt if another connection (a CLI
        run) wrote to the database since. Under the lock."""
        if self._want is None or self._want[0] != tuple(bounds):
            return None
        if self._db.execute("PRAGMA data_version").fetchone()[0] != self._version:
            self._totals = None
        if self._totals is None:
            self._rebuild()
        return self._totals

    def fleet_summary(self, bounds: Sequence[float]) -> FleetSummary:
        """Aggregates of every row: accounts at or below each usage bound, ratio count and sum,
        used and limit bytes, failing accounts by reason, oldest check. From the kept
        aggregates (``keep_totals``) and one index lookup; else ``fleet_summary_sql``."""
        with self._lock:
            totals = self._kept(bounds)
            if totals is None:
                return self.fleet_summary_sql(bounds)
            t = totals.fleet
            (oldest,) = self._db.execute("SELECT MIN(checked_at) FROM metric_rows").fetchone()
            return FleetSummary(
                tuple(t.at_or_below), t.count, rounded(t.ratio_sum), rounded(t.used),
                rounded(t.limit), oldest, t.rows, dict(t.failing),
            )  # fmt: skip

    def source_summaries(self, bounds: Sequence[float], level: float | None) -> list[SourceSummary]:
        """``fleet_summary`` per source and host of the configured accounts
        (``set_account_groups``): one per group, whatever the number of accounts; ``exported``
        counts the accounts at or above ``level`` or failing. Kept (``keep_totals``), else
        ``source_summaries_sql``."""
        with self._lock:
            totals = self._kept(bounds)
            if totals is None or totals.level != level:
                return self.source_summaries_sql(bounds, level)
            return [
                SourceSummary(
                    source, host, t.configured, t.rows, tuple(t.at_or_below), t.count,
                    rounded(t.ratio_sum), rounded(t.used), rounded(t.limit), t.exported,
                    dict(t.failing),
                )
                for (source, host), t in sorted(totals.groups.items())
            ]  # fmt: skip

    def fleet_summary_sql(self, bounds: Sequence[float]) -> FleetSummary:
        """Aggregates of every row, computed in SQLite over every row (the reference of the
        kept ones, and what any other ``bounds`` get): accounts at or below each usage bound,
        ratio count and sum, used and limit bytes, failing accounts by reason, oldest check."""
        bands = ", ".join("SUM(ratio <= ?)" for _ in bounds)
        row = self._query(
            f"SELECT {bands}, COUNT(ratio), TOTAL(ratio), TOTAL(used_bytes), TOTAL(limit_bytes), "  # noqa: S608 - placeholders only
            "MIN(checked_at), COUNT(*) FROM metric_rows",
            tuple(bounds),
        )[0]
        n = len(bounds)
        failing = self._query(
            "SELECT COALESCE(reason, 'internal'), COUNT(*) FROM metric_rows WHERE ok = 0 GROUP BY 1"
        )
        return FleetSummary(
            tuple(int(v or 0) for v in row[:n]), int(row[n]), float(row[n + 1]),
            float(row[n + 2]), float(row[n + 3]), row[n + 4], int(row[n + 5]),
            {str(r): int(c) for r, c in failing},
        )  # fmt: skip

    def set_account_groups(self, groups: Iterable[tuple[str, str, str]]) -> None:
        """Replace the (account, source, host) of every configured account (and rebuild the
        kept aggregates, once)."""
        with self._lock:
            with self._write() as db:
                db.execute("DELETE FROM account_groups")
                db.executemany("INSERT OR REPLACE INTO account_groups VALUES (?, ?, ?)", groups)
            self._rebuild()

    def source_summaries_sql(
        self, bounds: Sequence[float], level: float | None
    ) -> list[SourceSummary]:
        """``fleet_summary_sql`` per source and host of the configured accounts (``set_account_groups``),
        in SQLite: one row per group, whatever the number of accounts; ``exported`` counts the
        accounts at or above ``level`` or failing."""
        bands = ", ".join("SUM(m.ratio <= ?)" for _ in bounds)
        rows = self._query(
            f"SELECT g.source, g.host, COUNT(*), COUNT(m.account), {bands}, COUNT(m.ratio), "  # noqa: S608 - placeholders only
            "TOTAL(m.ratio), TOTAL(m.used_bytes), TOTAL(m.limit_bytes), "
            "TOTAL(m.ratio >= ? OR m.ok = 0) "
            "FROM account_groups g LEFT JOIN metric_rows m ON m.account = g.account "
            "GROUP BY g.source, g.host ORDER BY g.source, g.host",
            (*bounds, level if level is not None else 0.0),
        )
        failing: dict[tuple[str, str], dict[str, int]] = {}
        for source, host, reason, count in self._query(
            "SELECT g.source, g.host, COALESCE(m.reason, 'internal'), COUNT(*) "
            "FROM metric_rows m JOIN account_groups g ON g.account = m.account "
            "WHERE m.ok = 0 GROUP BY 1, 2, 3"
        ):
            failing.setdefault((source, host), {})[str(reason)] = int(count)
        summaries = []
        for source, host, configured, checked, *bands_, count, total, used, limit, shown in rows:
            summaries.append(SourceSummary(
                str(source), str(host), int(configured), int(checked),
                tuple(int(v or 0) for v in bands_), int(count), float(total), float(used),
                float(limit), int(shown), failing.get((source, host), {}),
            ))  # fmt: skip
        return summaries

    # ------------------------------------------------------------------ first seen
    def first_seen(
        self, account: str, folder: str, uidvalidity: int, uids: Sequence[int | str], now: datetime
    ) -> dict[int | str, datetime]:
        """When quotawatch first saw each UID in this folder; new UIDs are recorded as seen ``now``.

        Records of UIDs no longer in the folder (at any UIDVALIDITY) are dropped, so the table
        holds one row per message currently on the server.
        """
        keys = {str(u): u for u in uids}
        with self._write() as db:
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
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO warning_state VALUES (?, ?)", (account, json.dumps(data))
            )

    # ------------------------------------------------------------------ small values
    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
