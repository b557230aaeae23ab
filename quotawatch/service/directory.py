"""The accounts at run time: account sources read (files, doveadm), refreshed, and the last good list kept when a read fails."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from quotawatch.config import Account, AccountSource, Config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts, config_base, read_usernames
from quotawatch.errors import ConfigError, QuotawatchError
from quotawatch.mail.doveadm import Doveadm
from quotawatch.model import Clock, utcnow
from quotawatch.state import State

log = logging.getLogger(__name__)

#: builds a doveadm client for an access (tests may pass their own)
DoveadmFactory = Callable[[DoveadmAccess, SecretCache], Doveadm]


def open_doveadm(access: DoveadmAccess, secrets: SecretCache) -> Doveadm:
    """A doveadm client with its API key read like a password (file, environment, credential)."""
    key = None
    if access.url is not None:
        key = secrets.get(
            access.api_key_file, access.api_key_env, access.api_key_credential, kind="api_key"
        )
    return Doveadm(access, key)


@dataclass(frozen=True)
class SourceStatus:
    """How the last read of one account source went (the source metrics)."""

    label: str
    ok: bool
    users: int
    last_success: float | None
    error: str | None = None


def _key(source: AccountSource, index: int) -> str:
    """What identifies a source's user list: its kind and name (so a changed URL keeps the list)."""
    return f"{'doveadm' if source.doveadm is not None else 'file'}:{source.label(index)}"


class Directory:
    """Reads each account source when due (``refresh``, or forced on start-up and SIGHUP).

    A read that fails keeps the last good list (from memory, else the copy in the state
    database) and marks the source failing; it never empties a source that had users.
    """

    def __init__(
        self,
        state: State | None = None,
        clock: Clock = utcnow,
        doveadm_factory: DoveadmFactory = open_doveadm,
    ) -> None:
        self.state = state
        self.clock = clock
        self.doveadm_factory = doveadm_factory
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[str, ...]] = {}
        self._read_at: dict[str, datetime] = {}
        self._status: dict[str, SourceStatus] = {}

    def statuses(self) -> list[SourceStatus]:
        with self._lock:
            return sorted(self._status.values(), key=lambda s: s.label)

    def due(self, config: Config, now: datetime | None = None) -> bool:
        """Whether any source is due for a re-read."""
        now = now or self.clock()
        with self._lock:
            return any(
                _key(s, i) not in self._read_at or now - self._read_at[_key(s, i)] >= s.refresh
                for i, s in enumerate(config.account_sources)
            )

    def accounts(
        self,
        config: Config,
        config_path: str,
        secrets: SecretCache,
        *,
        force: bool = False,
        strict: bool = False,
    ) -> list[Account]:
        """Every account: explicit ones and each source's users (read if due or ``force``).

        ``strict`` (``config check``) turns a failed read into a ConfigError. A usernames_file
        that cannot be read before any good list exists is a ConfigError, as it always was.
        """
        now = self.clock()
        users: dict[int, Sequence[str]] = {}
        problems: list[tuple[str, str]] = []
        labels = set()
        for i, source in enumerate(config.account_sources):
            key, label = _key(source, i), source.label(i)
            labels.add(label)
            with self._lock:
                fresh = key in self._read_at and now - self._read_at[key] < source.refresh
                kept = self._lists.get(key)
            if fresh and not force and kept is not None:
                users[i] = kept
                continue
            try:
                names = tuple(self._read(source, i, config_path, secrets))
            except (QuotawatchError, OSError) as exc:
                if strict:
                    problems.append((f"account_sources[{i}]", str(exc)))
                    continue
                kept = kept if kept is not None else self._stored(key)
                if kept is None and isinstance(exc, ConfigError):
                    raise
                self._failed(key, label, kept, exc, now)
                users[i] = kept or ()
                continue
            self._succeeded(key, label, names, now)
            users[i] = names
        if problems:
            raise ConfigError(config_path, problems)
        with self._lock:
            for label in [k for k in self._status if k not in labels]:
                del self._status[label]
        return all_accounts(config, config_path, users)

    # ------------------------------------------------------------------ internals
    def _read(
        self, source: AccountSource, index: int, config_path: str, secrets: SecretCache
    ) -> list[str]:
        if source.doveadm is None:
            return read_usernames(source, config_base(config_path), f"account_sources[{index}]")
        return self.doveadm_factory(source.doveadm, secrets).users()

    def _succeeded(self, key: str, label: str, names: tuple[str, ...], now: datetime) -> None:
        with self._lock:
            changed = self._lists.get(key) != names
            self._lists[key] = names
            self._read_at[key] = now
            self._status[label] = SourceStatus(label, True, len(names), now.timestamp())
        if changed and self.state is not None and key.startswith("doveadm:"):
            try:
                self.state.put(f"source_users:{key}", json.dumps(list(names)))
            except Exception as exc:  # noqa: BLE001 - the list in memory still works
                log.warning("source %s: cannot keep a copy of the user list: %s", label, exc)

    def _failed(
        self, key: str, label: str, kept: tuple[str, ...] | None, exc: Exception, now: datetime
    ) -> None:
        with self._lock:
            previous = self._status.get(label)
            if kept is not None:
                self._lists[key] = kept
            # try again at the next refresh, not at every job
            self._read_at[key] = now
            self._status[label] = SourceStatus(
                label, False, len(kept or ()), previous.last_success if previous else None, str(exc)
            )
        keeping = f"keeping the last good list of {len(kept)} users" if kept else "no list yet"
        log.error("source %s: cannot read the user list (%s); %s", label, exc, keeping)

    def _stored(self, key: str) -> tuple[str, ...] | None:
        if self.state is None:
            return None
        try:
            text = self.state.get(f"source_users:{key}")
        except Exception:  # noqa: BLE001
            return None
        return tuple(json.loads(text)) if text else None


def doveadm_key_problems(config: Config, secrets: SecretCache) -> list[tuple[str, str]]:
    """``config check``: every doveadm API key of the sources and accounts can be read."""
    accesses = [
        (f"account_sources[{i}].doveadm", s.doveadm) for i, s in enumerate(config.account_sources)
    ]
    accesses += [(f"account_sources[{i}].template.doveadm", s.template.doveadm)
                 for i, s in enumerate(config.account_sources)]  # fmt: skip
    accesses += [(f"accounts[{i}].doveadm", a.doveadm) for i, a in enumerate(config.accounts)]
    problems = []
    for where, access in accesses:
        if access is None or access.url is None:
            continue
        try:
            open_doveadm(access, secrets)
        except QuotawatchError as exc:
            problems.append((where, str(exc)))
    return problems
