"""The accounts at run time: account sources read (files, doveadm, LDAP), refreshed, and the last good list kept when a read fails."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from quotawatch.config import Account, AccountSource, Config
from quotawatch.config.fleet import DoveadmAccess
from quotawatch.config.ldap import LdapSource
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import (
    AccountTable,
    Listed,
    account_table,
    config_base,
    read_usernames,
)
from quotawatch.errors import ConfigError, ProtocolError, QuotawatchError
from quotawatch.extras import MissingExtra
from quotawatch.mail.doveadm import Doveadm
from quotawatch.mail.ldap import Ldap
from quotawatch.model import Clock, utcnow
from quotawatch.state import State

log = logging.getLogger(__name__)

#: builds a doveadm client for an access (tests may pass their own)
DoveadmFactory = Callable[[DoveadmAccess, SecretCache], Doveadm]
#: builds an LDAP client for a source's settings
LdapFactory = Callable[[LdapSource, SecretCache], Ldap]
#: the kinds of source whose list comes from a server (kept in the state database, never emptied)
SERVER_KINDS = ("doveadm", "ldap")


def open_doveadm(access: DoveadmAccess, secrets: SecretCache) -> Doveadm:
    """A doveadm client with its API key read like a password (file, environment, credential)."""
    key = None
    if access.url is not None:
        key = secrets.get(
            access.api_key_file, access.api_key_env, access.api_key_credential, kind="api_key"
        )
    return Doveadm(access, key)


def open_ldap(settings: LdapSource, secrets: SecretCache) -> Ldap:
    """An LDAP client with its bind password read like a password (file, environment, credential)."""
    password = None
    if settings.bind_dn is not None:
        password = secrets.get(
            settings.bind_password_file,
            settings.bind_password_env,
            settings.bind_password_credential,
            kind="bind_password",
        )
    return Ldap(settings, password)


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
    kind = "file" if source.kind == "usernames_file" else source.kind
    return f"{kind}:{source.label(index)}"


class Directory:
    """Reads each account source when due (``refresh``, or forced on start-up and SIGHUP).

    A read that fails keeps the last good list (from memory, else the copy in the state
    database) and marks the source failing; it never empties a source that had users: a
    server that lists nobody where it listed some before counts as a failed read.
    """

    def __init__(
        self,
        state: State | None = None,
        clock: Clock = utcnow,
        doveadm_factory: DoveadmFactory = open_doveadm,
        ldap_factory: LdapFactory = open_ldap,
    ) -> None:
        self.state = state
        self.clock = clock
        self.doveadm_factory = doveadm_factory
        self.ldap_factory = ldap_factory
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[Listed, ...]] = {}
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
        """Every account, in order (``table`` with the same arguments, as a list)."""
        return list(self.table(config, config_path, secrets, force=force, strict=strict).values())

    def table(
        self,
        config: Config,
        config_path: str,
        secrets: SecretCache,
        *,
        force: bool = False,
        strict: bool = False,
    ) -> AccountTable:
        """Every account by name (a compact table, its ``spans`` by source label): explicit
        ones and each source's users (read if due or ``force``).

        ``strict`` (``config check``) turns a failed read into a ConfigError. A usernames_file
        that cannot be read before any good list exists is a ConfigError, as it always was; a
        missing optional package (the ldap extra) is raised as MissingExtra.
        """
        now = self.clock()
        users: dict[int, Sequence[Listed]] = {}
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
                if not names and source.kind in SERVER_KINDS and not strict:
                    kept = kept if kept is not None else self._stored(key)
                    if kept:
                        raise ProtocolError(
                            label, f"listed no users (the last good list had {len(kept)})"
                        )
            except MissingExtra:
                raise
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
        return account_table(config, config_path, users)

    # ------------------------------------------------------------------ internals
    def _read(
        self, source: AccountSource, index: int, config_path: str, secrets: SecretCache
    ) -> list[Listed]:
        if source.doveadm is not None:
            return [Listed(u) for u in self.doveadm_factory(source.doveadm, secrets).users()]
        if source.ldap is not None:
            return self.ldap_factory(source.ldap, secrets).users()
        where = f"account_sources[{index}]"
        return [Listed(u) for u in read_usernames(source, config_base(config_path), where)]

    def _succeeded(self, key: str, label: str, names: tuple[Listed, ...], now: datetime) -> None:
        with self._lock:
            changed = self._lists.get(key) != names
            self._lists[key] = names
            self._read_at[key] = now
            self._status[label] = SourceStatus(label, True, len(names), now.timestamp())
        if changed and self.state is not None and key.split(":", 1)[0] in SERVER_KINDS:
            stored = [e.user if e.email is None else [e.user, e.email] for e in names]
            try:
                self.state.put(f"source_users:{key}", json.dumps(stored))
            except Exception as exc:  # noqa: BLE001 - the list in memory still works
                log.warning("source %s: cannot keep a copy of the user list: %s", label, exc)

    def _failed(
        self, key: str, label: str, kept: tuple[Listed, ...] | None, exc: Exception, now: datetime
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

    def _stored(self, key: str) -> tuple[Listed, ...] | None:
        """The copy of a server source's last good list: usernames, or [username, email]."""
        if self.state is None:
            return None
        try:
            text = self.state.get(f"source_users:{key}")
            items = json.loads(text) if text else None
            if items is None:
                return None
            return tuple(Listed(i) if isinstance(i, str) else Listed(*i) for i in items)
        except Exception:  # noqa: BLE001 - no usable copy
            return None


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


def ldap_problems(config: Config, secrets: SecretCache) -> list[tuple[str, str]]:
    """``config check``: each ldap source's bind password and ca_file can be used, and
    python-ldap (the ldap extra) is installed; no directory is asked."""
    from quotawatch.config.files import ca_file_problem
    from quotawatch.mail.ldap import load_ldap

    problems: list[tuple[str, str]] = []
    for i, source in enumerate(config.account_sources):
        settings = source.ldap
        if settings is None:
            continue
        where = f"account_sources[{i}].ldap"
        if settings.bind_dn is not None:
            field = (
                "bind_password_file" if settings.bind_password_file is not None
                else "bind_password_env" if settings.bind_password_env is not None
                else "bind_password_credential"
            )  # fmt: skip
            try:
                open_ldap(settings, secrets)
            except QuotawatchError as exc:
                problems.append((f"{where}.{field}", str(exc)))
        if settings.ca_file is not None:
            why = ca_file_problem(settings.ca_file)
            if why:
                problems.append((f"{where}.ca_file", why))
        try:
            load_ldap()
        except MissingExtra as exc:
            problems.append((where, str(exc)))
    return problems
