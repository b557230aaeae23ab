"""``quotawatch auth login`` and ``auth status``: enrol a delegated account, and show every OAuth2 account's token state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quotawatch.config import Account
from quotawatch.errors import ConnectError, TokenError
from quotawatch.mail.oauth2.enrol import device_login
from quotawatch.mail.oauth2.providers import GrantRefused, GrantUnreachable
from quotawatch.mail.oauth2.tokens import TokenBroker

#: Microsoft: a refresh token not used for 90 days stops working (a used one is renewed)
REFRESH_LAPSE_SECONDS = 90 * 86400


@dataclass(frozen=True)
class TokenStatus:
    """One OAuth2 account's sign-in state, as ``auth status`` shows it (no token in it)."""

    account: str
    provider: str
    flow: str
    access_expires_at: float | None
    refresh_stored: bool
    refresh_lapses_at: float | None
    action: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account, "provider": self.provider, "flow": self.flow,
            "access_token_expires_at": _iso(self.access_expires_at),
            "refresh_token": self.refresh_stored,
            "refresh_token_lapses_at": _iso(self.refresh_lapses_at),
            "action": self.action,
        }  # fmt: skip

    def line(self, now: float) -> str:
        if self.access_expires_at is None:
            access = "no access token cached"
        elif self.access_expires_at > now:
            access = f"access token valid until {_iso(self.access_expires_at)}"
        else:
            access = "access token expired (a new one is fetched at the next login)"
        parts = [f"{self.account}: {self.provider} {self.flow}", access]
        if self.flow == "delegated":
            parts.append(
                f"refresh token stored, lapses if unused after {_iso(self.refresh_lapses_at)}"
                if self.refresh_stored
                else "no refresh token"
            )
        if self.action:
            parts.append(f"run: {self.action}")
        return "; ".join(parts)


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def status(accounts: Sequence[Account], broker: TokenBroker) -> list[TokenStatus]:
    """The token state of every ``auth: oauth2`` account, from the cache only (no network)."""
    out = []
    for acct in accounts:
        if acct.oauth2 is None:
            continue
        entry = broker.entry(acct.oauth2, acct.username)
        access = entry.expires_at if entry is not None and entry.access_token else None
        refresh = entry is not None and entry.refresh_token is not None
        used = entry.refresh_used_at if entry is not None else None
        lapses = used + REFRESH_LAPSE_SECONDS if refresh and used is not None else None
        action = None
        if acct.oauth2.flow == "delegated" and not refresh:
            action = broker.login_hint(acct.name)
        out.append(TokenStatus(
            acct.name, acct.oauth2.provider, acct.oauth2.flow, access, refresh, lapses, action
        ))  # fmt: skip
    return out


def refresh_lapses(accounts: Sequence[Account], broker: TokenBroker) -> dict[str, float]:
    """Delegated accounts -> when their refresh token lapses unused (0 = none stored), for metrics."""
    return {
        row.account: row.refresh_lapses_at or 0.0
        for row in status(accounts, broker)
        if row.flow == "delegated"
    }


def login(account: Account, broker: TokenBroker, show: Callable[[str], None]) -> None:
    """Run the device-code flow for ``account`` and store its refresh token (mode 0600)."""
    settings = account.oauth2
    if settings is None or settings.flow != "delegated":
        raise TokenError(
            account.name, "auth login is for accounts with auth: oauth2 and oauth2.flow: delegated"
        )
    secret = broker.secrets.client_secret(settings) if settings.has_secret else None
    try:
        grant = device_login(settings, secret, show)
    except GrantRefused as exc:
        raise TokenError(account.name, f"sign-in failed ({exc})") from None
    except GrantUnreachable as exc:
        raise ConnectError(account.name, f"OAuth2 endpoint unreachable: {exc}") from None
    broker.save_sign_in(settings, account.username, account.name, grant)
