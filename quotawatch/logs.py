"""Logging to stderr: one line per event, journald-friendly, or JSON for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from quotawatch.text import escape


class OneLineFormatter(logging.Formatter):
    """The usual text line, with control characters in the message shown escaped (``\\r\\n``),
    so a folder name or server reply can never forge a log line; tracebacks stay as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger; no timestamps under journald, which adds its own."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(OneLineFormatter("<%(levelno)s>%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # protocol libraries log raw traffic at DEBUG; never let that reach our output
    for noisy in ("imapclient", "apscheduler.executors", "aiosmtpd", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
