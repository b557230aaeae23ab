"""The append-only audit log: one JSON line per message removed, moved or archived, fsynced."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: one shared encoder: ``json.dumps`` with options builds a new one per call
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
#: an entry as its audit line (without the newline)
encode = _encode


def append_synced(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created 0600, its folder 0700) and fsync it before returning.
    A line left torn by a crash stays alone on its line: the new text starts on a fresh one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            text = "\n" + text
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """Appends JSON lines to ``path`` (``state_dir/audit.jsonl``); safe to share between threads.

    The file is created on the first record (mode 0600) and only ever appended to; each batch
    of records is flushed and fsynced before ``record_many`` returns.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record_many(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append entries with one write and one fsync."""
        self.record_lines([_encode(e) for e in entries])

    def record_lines(self, lines: Sequence[str]) -> None:
        """Append entries already encoded (:func:`encode`), one write and one fsync."""
        if not lines:
            return
        with self._lock:
            append_synced(self.path, "".join(line + "\n" for line in lines))

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry so far, oldest first (for tests and reports)."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
