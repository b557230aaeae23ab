"""OAuth2 access tokens for mail sessions: cached in memory and in ``state_dir`` (mode 0600), fetched only near expiry.

One app-only credential (Microsoft client credentials, generic client credentials) gives one
token for every mailbox, so the cache key leaves the mailbox out there; Google service accounts
(one token per impersonated user) and delegated sign-ins (one refresh token per person) key by
mailbox. A token is handed out only while it has more than :data:`MARGIN` seconds left, so a
session that starts with it ends before it expires; polls in between reuse it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets as _random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from quotawatch.config import Config
from quotawatch.config.oauth2 import OAuth2
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import ConnectError, TokenError
from quotawatch.mail.oauth2.providers import FETCHERS, Grant, GrantRefused, GrantUnreachable

log = logging.getLogger(__name__)

#: seconds of validity a cached token must have left to be used for a new session
MARGIN = 300.0
#: the token cache directory below state_dir
STORE_NAME = "oauth2-tokens"

Fetcher = Callable[[OAuth2, str, SecretStr | None, SecretStr | None], Grant]


@dataclass(frozen=True)
class Entry:
    """What is cached for one key: the access token, and for delegated sign-ins the refresh token."""

    username: str
    label: str
    access_token: SecretStr | None = None
    expires_at: float = 0.0
    refresh_token: SecretStr | None = None
    #: when the refresh token was last obtained or used (it lapses after 90 days unused)
    refresh_used_at: float | None = None
    #: the access token's lifetime in seconds (0: unknown)
    lifetime: float = 0.0

    def fresh(self, now: float, margin: float) -> bool:
        """Whether the access token has more than ``margin`` seconds left (a quarter of its
        lifetime at most, so a provider's 5-minute tokens are still reused within a poll)."""
        if self.access_token is None:
            return False
        if self.lifetime > 0:
            margin = min(margin, self.lifetime / 4)
        return self.expires_at - margin > now

    def to_json(self) -> dict[str, Any]:
        def plain(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return {
            "username": self.username, "label": self.label,
            "access_token": plain(self.access_token), "expires_at": self.expires_at,
            "refresh_token": plain(self.refresh_token), "refresh_used_at": self.refresh_used_at,
            "lifetime": self.lifetime,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        def secret(value: Any) -> SecretStr | None:
            return SecretStr(value) if isinstance(value, str) and value else None

        return cls(
            str(data.get("username", "")), str(data.get("label", "")),
            secret(data.get("access_token")), float(data.get("expires_at") or 0),
            secret(data.get("refresh_token")),
            float(data["refresh_used_at"]) if data.get("refresh_used_at") else None,
            float(data.get("lifetime") or 0),
        )  # fmt: skip


def cache_key(settings: OAuth2, username: str) -> str:
    """Stable key of the token ``settings`` give for ``username`` (no secret in it)."""
    shared = settings.flow == "app-only" and settings.provider != "google"
    endpoint = (
        settings.effective_authority
        if settings.provider == "microsoft"
        else settings.token_endpoint
    )
    parts = [
        settings.provider, settings.flow, settings.client_id, endpoint or "",
        " ".join(sorted(settings.effective_scopes)), "" if shared else username.lower(),
    ]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class TokenStore:
    """The token cache on disk: a directory (mode 0700) with one JSON file (mode 0600) per key,
    each written atomically, so a fleet of 10,000 impersonated mailboxes costs one small write
    per new token and processes (daemon, ``check``, ``auth login``) share it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, key: str) -> Path:
        return self.path / f"{key}.json"

    def load(self, key: str) -> Entry | None:
        path = self._file(key)
        try:
            if path.stat().st_mode & 0o077:
                log.warning("token cache file %s was readable by others; mode set to 0600", path)
                path.chmod(0o600)
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("token cache file %s unreadable, ignored: %s", path, type(exc).__name__)
            return None
        return Entry.from_json(data) if isinstance(data, dict) else None

    def save(self, key: str, entry: Entry) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.stat().st_mode & 0o077:
            self.path.chmod(0o700)
        path = self._file(key)
        tmp = path.with_name(f".{path.name}.{_random.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry.to_json(), fh)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


class TokenBroker:
    """Hands out access tokens (the ``TokenSource`` of :class:`SecretCache`), one fetch per key at a time."""

    def __init__(
        self,
        state_dir: Path | None,
        secrets: SecretCache,
        *,
        config_path: str = "CONFIG",
        clock: Callable[[], float] = time.time,
        fetchers: dict[str, Fetcher] | None = None,
        margin: float = MARGIN,
    ) -> None:
        self.store = TokenStore(state_dir / STORE_NAME) if state_dir is not None else None
        self.secrets = secrets
        self.config_path = config_path
        self.clock = clock
        self.fetchers = fetchers if fetchers is not None else FETCHERS
        self.margin = margin
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        #: caches of other modules that live as long as this broker (Graph usage reports)
        self.attachments: dict[str, Any] = {}

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def entry(self, settings: OAuth2, username: str) -> Entry | None:
        """What is cached for this mailbox (memory, else the file)."""
        key = cache_key(settings, username)
        with self._lock:
            if key not in self._entries and self.store is not None:
                stored = self.store.load(key)
                if stored is not None:
                    self._entries[key] = stored
            return self._entries.get(key)

    def _reload(self, key: str) -> Entry | None:
        """The entry as its file has it now (``auth login`` and ``check`` write it too)."""
        if self.store is None:
            return None
        with self._lock:
            stored = self.store.load(key)
            if stored is not None:
                self._entries[key] = stored
            return stored

    def _put(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            if self.store is not None:
                self.store.save(key, entry)

    def login_hint(self, label: str) -> str:
        return f"quotawatch auth login --config {self.config_path} --account {label}"

    def access_token(self, settings: OAuth2, username: str, label: str) -> SecretStr:
        """A token with more than ``margin`` seconds left: the cached one, else a new one."""
        key = cache_key(settings, username)
        with self._locked(key):
            entry = self.entry(settings, username)
            now = self.clock()
            if entry is not None and entry.fresh(now, self.margin):
                assert entry.access_token is not None
                return entry.access_token
            entry = self._reload(key) or entry  # another process may have signed in or rotated
            if entry is not None and entry.fresh(now, self.margin):
                assert entry.access_token is not None
                return entry.access_token
            grant = self._fetch(settings, username, label, entry)
            refresh = grant.refresh_token or (entry.refresh_token if entry else None)
            used = now if settings.flow == "delegated" else None
            expires = now + grant.expires_in
            new = Entry(
                username, label, grant.access_token, expires, refresh, used, grant.expires_in
            )
            self._put(key, new)
            log.info(
                "oauth2 token obtained account=%s provider=%s flow=%s valid_for=%ds",
                label, settings.provider, settings.flow, int(grant.expires_in),
            )  # fmt: skip
            return grant.access_token

    def _fetch(self, settings: OAuth2, username: str, label: str, entry: Entry | None) -> Grant:
        delegated = settings.flow == "delegated"
        refresh = entry.refresh_token if entry is not None else None
        if delegated and refresh is None:
            raise TokenError(
                label, f"no OAuth2 sign-in stored for {username}; run: {self.login_hint(label)}"
            )
        secret = None
        if not delegated or settings.has_secret:
            secret = self.secrets.client_secret(settings)
        fetch = self.fetchers[settings.provider]
        try:
            return fetch(settings, username, secret, refresh)
        except GrantRefused as exc:
            if delegated:
                raise TokenError(
                    label,
                    f"the OAuth2 refresh token was refused ({exc}); sign in again: "
                    f"{self.login_hint(label)}",
                ) from None
            raise TokenError(
                label,
                f"the OAuth2 token endpoint refused the app credential ({exc}); check "
                "client_id, the client secret and the app's mailbox permissions",
            ) from None
        except GrantUnreachable as exc:
            raise ConnectError(label, f"OAuth2 token endpoint unreachable: {exc}") from None

    def invalidate(self, settings: OAuth2, username: str) -> None:
        """Forget the access token (the server said it expired); the refresh token stays."""
        key = cache_key(settings, username)
        with self._locked(key):
            entry = self.entry(settings, username)
            if entry is not None:
                self._put(key, replace(entry, access_token=None, expires_at=0.0))

    def save_sign_in(self, settings: OAuth2, username: str, label: str, grant: Grant) -> None:
        """Store what ``auth login`` obtained (the refresh token above all)."""
        key = cache_key(settings, username)
        with self._locked(key):
            now = self.clock()
            entry = Entry(
                username,
                label,
                grant.access_token,
                now + grant.expires_in,
                grant.refresh_token,
                now,
                grant.expires_in,
            )
            self._put(key, entry)


def secret_cache(config: Config, config_path: str = "CONFIG") -> SecretCache:
    """A SecretCache whose OAuth2 tokens come from a TokenBroker caching in ``state_dir``."""
    cache = SecretCache()
    cache.tokens = TokenBroker(config.state_dir, cache, config_path=config_path)
    return cache
