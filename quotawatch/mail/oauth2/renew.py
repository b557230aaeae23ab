"""A mailbox session for ``auth: oauth2`` accounts that logs in again before its access token expires.

Exchange Online ends an IMAP session whose token has expired (``* BYE Session invalidated -
AccessTokenExpired``, 60–90 minutes after sign-in), which would cut a long cleanup short. The
wrapper checks the token's expiry before every operation and, with less than :data:`RENEW_BEFORE`
seconds (an eighth of a short token's lifetime) left, logs out between two operations and logs in with a fresh token; if the server ends
the session for an expired token anyway, it logs in again and repeats that one operation once.
Repeating is safe because every IMAP change is UID-exact under a UIDVALIDITY check; a POP3
session is never replaced once a ``DELE`` was sent (the marks live only in that session until
QUIT), so there the server's error stands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TypeVar

from pydantic import SecretStr

from quotawatch.config import Account
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import password_for
from quotawatch.errors import ConnectError
from quotawatch.mail.oauth2.graph import reports_for
from quotawatch.mail.oauth2.tokens import TokenBroker
from quotawatch.mail.session import (
    FolderSelection,
    Keep,
    MailboxSession,
    MessageMeta,
    SearchQuery,
    SessionFactory,
)
from quotawatch.model import FolderInfo, QuotaResource

log = logging.getLogger(__name__)

#: log in again when the token has less than this many seconds left
RENEW_BEFORE = 120.0
#: words with which servers end a session because its token expired
EXPIRED_WORDS = ("accesstokenexpired", "token expired", "expired token", "invalid_token")

T = TypeVar("T")


def open_account(account: Account, secrets: SecretCache, factory: SessionFactory) -> MailboxSession:
    """Log in as the account says: with its password, or (auth: oauth2) through a RenewingSession
    that reads the time from the token broker's clock."""
    tokens = secrets.tokens
    if account.oauth2 is None or not isinstance(tokens, TokenBroker):
        return factory(account, password_for(account, secrets))
    return RenewingSession(account, tokens, factory, clock=tokens.clock)


class RenewingSession:
    """A MailboxSession that replaces its inner session when the token runs out (see module doc)."""

    def __init__(
        self,
        account: Account,
        tokens: TokenBroker,
        factory: SessionFactory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert account.oauth2 is not None
        self._config = account
        self._settings = account.oauth2
        self._tokens = tokens
        self._factory = factory
        self._clock = clock
        self._marked = False  # a deferred delete (POP3 DELE) was sent: never replace the session
        self.renewals = 0
        self._inner, self._renew_at = self._login()
        self.account = self._inner.account
        self.protocol = self._inner.protocol
        self.deferred_deletes = self._inner.deferred_deletes

    def _login(self) -> tuple[MailboxSession, float]:
        token: SecretStr = self._tokens.access_token(
            self._settings, self._config.username, self._config.name
        )
        entry = self._tokens.entry(self._settings, self._config.username)
        if entry is None:
            return self._factory(self._config, token), self._clock() + 3600
        # renew later than the broker would hand out a new token (a quarter of the lifetime at
        # most), so the token asked for then is a new one
        lead = min(RENEW_BEFORE, entry.lifetime / 8) if entry.lifetime > 0 else RENEW_BEFORE
        return self._factory(self._config, token), entry.expires_at - lead

    def _renew(self, why: str) -> None:
        log.info("account=%s: logging in again with a new OAuth2 token (%s)", self.account, why)
        self._inner.close()
        self._inner, self._renew_at = self._login()
        self.renewals += 1

    def _call(self, operation: Callable[[MailboxSession], T]) -> T:
        renewable = not self._marked
        if renewable and self._clock() > self._renew_at:
            self._renew("the token expires soon")
        try:
            return operation(self._inner)
        except ConnectError as exc:
            if not renewable or not any(w in exc.detail.lower() for w in EXPIRED_WORDS):
                raise
            self._tokens.invalidate(self._settings, self._config.username)
            self._renew("the server ended the session: token expired")
            return operation(self._inner)

    # ------------------------------------------------------------------ MailboxSession
    def capabilities(self) -> frozenset[str]:
        return self._inner.capabilities()

    def quota(self) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        if self._config.quota_from_graph:
            return reports_for(self._tokens).quota(self._config)
        return self._call(lambda s: s.quota())

    def folders(self) -> tuple[FolderInfo, ...]:
        return self._call(lambda s: s.folders())

    def select_candidates(self, folder: str, query: SearchQuery) -> FolderSelection:
        return self._call(lambda s: s.select_candidates(folder, query))

    def message_meta(
        self, folder: str, uidvalidity: int | None, uids: Sequence[int | str]
    ) -> dict[int | str, MessageMeta]:
        return self._call(lambda s: s.message_meta(folder, uidvalidity, uids))

    def fetch_message(self, folder: str, uidvalidity: int | None, uid: int | str) -> bytes:
        return self._call(lambda s: s.fetch_message(folder, uidvalidity, uid))

    def delete(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        if self.deferred_deletes:
            self._call(lambda s: None)  # renew now if due: afterwards the session must stay
            self._marked = True
            return self._inner.delete(folder, uidvalidity, uids, keep, kept)
        return self._call(lambda s: s.delete(folder, uidvalidity, uids, keep, kept))

    def move(
        self,
        folder: str,
        uidvalidity: int | None,
        uids: Sequence[int | str],
        target: str,
        keep: Keep | None = None,
        kept: MutableMapping[int | str, str] | None = None,
    ) -> int:
        return self._call(lambda s: s.move(folder, uidvalidity, uids, target, keep, kept))

    def commit(self) -> None:
        self._inner.commit()

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        """Anything beyond the interface (adapter-specific members) comes from the inner session."""
        if name.startswith("__") or name in ("_inner",):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __enter__(self) -> RenewingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
