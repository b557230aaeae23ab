"""The write-ahead journal of cleanups: a batch's intent is on disk before the server is touched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from quotawatch.errors import StateError
from quotawatch.retention.audit import AuditLog, append_synced, encode

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
_INTENT = '"status": "intent"'


def key(entry: dict[str, Any]) -> tuple[str, int | None, str]:
    """What identifies a journaled message: folder, UIDVALIDITY and UID (or UIDL)."""
    return entry["folder"], entry.get("uidvalidity"), str(entry["uid"])


class Journal:
    """Intents and their settlement, per account, in ``state_dir/journal/``; outcomes in the audit log.

    :meth:`intend` appends each message of a batch to the audit log with status ``intent`` (so
    the audit log is proven writable) and to the account's journal file, both fsynced, before
    the caller touches the server. :meth:`settle` appends the outcomes (``done``, ``kept``, ...)
    to the audit log, then marks those intents settled; a journal with nothing open is removed.
    An intent journaled again (the same folder, UIDVALIDITY and UID) stays one open intent.
    Intents still open at the next run are reconciled against the server (reconcile.py).
    """

    def __init__(self, audit: AuditLog, directory: Path | None = None) -> None:
        self.audit = audit
        self.dir = Path(directory) if directory is not None else audit.path.parent / "journal"
        self._lock = threading.Lock()
        #: open keys per account, read from the file once, then kept in step with it
        self._keys: dict[str, set[tuple[str, int | None, str]]] = {}
        #: the intents of open batches as journaled and as encoded, by key: an outcome that
        #: differs only in its status is the same line with the status replaced
        self._lines: dict[tuple[str, int | None, str], tuple[dict[str, Any], str]] = {}

    def path(self, account: str) -> Path:
        digest = hashlib.sha256(account.encode("utf-8")).hexdigest()[:12]
        return self.dir / f"{_UNSAFE.sub('_', account)[:60]}-{digest}.jsonl"

    def _append(self, account: str, lines: Iterable[dict[str, Any]]) -> None:
        path = self.path(account)
        text = "".join(_encode(line) + "\n" for line in lines)
        try:
            append_synced(path, text)
        except OSError as exc:
            raise StateError(account, str(path), exc) from None

    def _audit(self, account: str, lines: Sequence[str]) -> None:
        try:
            self.audit.record_lines(lines)
        except OSError as exc:
            raise StateError(account, str(self.audit.path), exc) from None

    def intend(self, account: str, entries: Sequence[dict[str, Any]]) -> None:
        """Record that these messages are about to be removed; StateError if that is impossible.
        Each intent is encoded once: the audit line, and inside ``{"open": ...}`` the journal's."""
        if not entries:
            return
        with self._lock:
            keys = self._open_keys(account)
            intents = [{**e, "status": "intent"} for e in entries]
            lines = [encode(e) for e in intents]
            self._audit(account, lines)
            path = self.path(account)
            try:
                append_synced(path, "".join(f'{{"open": {line}}}\n' for line in lines))
            except OSError as exc:
                raise StateError(account, str(path), exc) from None
            for e, line in zip(intents, lines, strict=True):
                k = key(e)
                keys.add(k)
                self._lines[k] = (e, line)

    def _line(self, k: tuple[str, int | None, str], outcome: dict[str, Any]) -> str:
        """The audit line of ``outcome``: its intent's line with the status replaced where
        nothing else differs (JSON escapes every quote inside a value, so ``"status":
        "intent"`` occurs once, as that item), else encoded afresh."""
        known = self._lines.pop(k, None)
        if known is not None:
            intent, line = known
            if {**outcome, "status": "intent"} == intent:
                return line.replace(_INTENT, '"status": ' + encode(outcome["status"]), 1)
        return encode(outcome)

    def settle(self, account: str, outcomes: Sequence[dict[str, Any]]) -> None:
        """Audit ``outcomes`` (each with its ``status``), then close their intents."""
        if not outcomes:
            return
        with self._lock:
            keys = self._open_keys(account)
            settled = [key(e) for e in outcomes]
            self._audit(account, [self._line(k, e) for k, e in zip(settled, outcomes, strict=True)])
            self._append(account, [{"settled": [list(k) for k in settled]}])
            keys.difference_update(settled)
            if not keys:
                with contextlib.suppress(OSError):  # an empty journal left behind is harmless
                    self.path(account).unlink()

    def _open_keys(self, account: str) -> set[tuple[str, int | None, str]]:
        if account not in self._keys:
            self._keys[account] = {key(e) for e in self._open(account)}
        return self._keys[account]

    def open_intents(self, account: str) -> list[dict[str, Any]]:
        """The intents of ``account`` not settled yet, oldest first (one per message)."""
        with self._lock:
            return self._open(account)

    def _open(self, account: str) -> list[dict[str, Any]]:
        path = self.path(account)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(account, str(path), exc) from None
        pending: dict[tuple[str, int | None, str], dict[str, Any]] = {}
        for line in text.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash: its batch was never started
            if "open" in item:
                pending[key(item["open"])] = item["open"]
            for folder, uidvalidity, uid in item.get("settled", ()):
                pending.pop((folder, uidvalidity, str(uid)), None)
        return list(pending.values())
