"""The admin digest: every ``admin_digest.every``, one mail listing the accounts above a warning threshold."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from quotawatch.config import Config, Warnings
from quotawatch.errors import MailError
from quotawatch.state import State
from quotawatch.warnings.decision import Usage, highest_exceeded
from quotawatch.warnings.mailer import Mailer, build_message
from quotawatch.warnings.render import DigestRow, render_digest

log = logging.getLogger(__name__)

#: kv key holding the ISO time the last digest was handled
SENT_KEY = "warnings.digest_sent_at"
_lock = threading.Lock()


def _usage(data: Mapping[str, Any]) -> Usage | None:
    ratio = data.get("usage_ratio")
    if ratio is None:
        return None
    storage = next(
        (q for q in data.get("quota") or () if q.get("resource") == "STORAGE" and q.get("limit")),
        None,
    )
    if storage is None:
        return Usage(float(ratio))
    return Usage(float(ratio), int(storage["usage"]), int(storage["limit"]))


def digest_rows(
    reports: Mapping[str, tuple[datetime, bool, dict[str, Any]]], policy: Warnings
) -> list[DigestRow]:
    """Accounts whose last stored reading exceeds a threshold, fullest first."""
    rows: list[DigestRow] = []
    for name, (_when, _ok, data) in reports.items():
        usage = _usage(data)
        if usage is None:
            continue
        top = highest_exceeded(policy, usage)
        if top is not None:
            rows.append((name, usage.ratio, usage.used_bytes, usage.limit_bytes, top.label))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def due(state: State, config: Config, now: datetime) -> bool:
    digest = config.warnings.admin_digest if config.warnings else None
    if digest is None or config.smtp is None:
        return False
    last = state.get(SENT_KEY)
    return last is None or now - datetime.fromisoformat(last) >= digest.every


def send_digest_if_due(state: State, config: Config, now: datetime, mailer: Mailer) -> bool:
    """Send the digest if its interval has passed (one thread at a time); True if one was sent.

    Nothing is sent when no account is above a threshold; a failed send is retried at the next
    call. Never raises.
    """
    if not _lock.acquire(blocking=False):
        return False
    try:
        if not due(state, config, now):
            return False
        assert config.warnings is not None and config.warnings.admin_digest is not None
        assert config.smtp is not None
        rows = digest_rows(state.last_reports(), config.warnings)
        if rows:
            rendered = render_digest(rows, config.warnings.language)
            msg = build_message(
                rendered, config.smtp.from_, [config.warnings.admin_digest.to], [], now
            )
            mailer.send(msg)
            log.info("admin digest sent accounts=%d", len(rows))
        state.put(SENT_KEY, now.isoformat())
        return bool(rows)
    except MailError as exc:
        log.warning("admin digest not sent reason=%s: %s", exc.reason, exc)
        return False
    except Exception:
        log.exception("admin digest failed")
        return False
    finally:
        _lock.release()
