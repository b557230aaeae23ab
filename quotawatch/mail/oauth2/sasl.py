"""SASL XOAUTH2 and OAUTHBEARER (RFC 7628) client responses, and the server's error challenge."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from quotawatch.config import Account

MECHANISMS = {"xoauth2": "XOAUTH2", "oauthbearer": "OAUTHBEARER"}


def _saslname(user: str) -> str:
    """RFC 5801 saslname: "=" and "," escaped."""
    return user.replace("=", "=3D").replace(",", "=2C")


def initial_response(mechanism: str, user: str, token: SecretStr, host: str, port: int) -> bytes:
    """The client's first (and only) message, not yet base64-encoded."""
    bearer = token.get_secret_value()
    if mechanism == "oauthbearer":
        return (
            f"n,a={_saslname(user)},\x01host={host}\x01port={port}\x01auth=Bearer {bearer}\x01\x01"
        ).encode()
    return f"user={user}\x01auth=Bearer {bearer}\x01\x01".encode()


@dataclass
class Responder:
    """Answers the server's challenges: the token first; after an error challenge (a JSON
    status, RFC 7628 section 3.2.2) the empty response XOAUTH2 wants, or %x01 for OAUTHBEARER,
    so the server ends the exchange with its failure reply (whose words are not kept)."""

    mechanism: str
    user: str
    token: SecretStr
    host: str
    port: int
    sent: bool = False

    @classmethod
    def for_account(cls, account: Account, token: SecretStr) -> Responder:
        """The responder for ``account``'s mechanism, user, host and port."""
        assert account.oauth2 is not None
        mech, port = account.oauth2.mechanism, account.effective_port
        return cls(mech, account.username, token, account.host, port)

    def __call__(self, challenge: bytes | None = None) -> bytes:
        if not self.sent:
            self.sent = True
            return initial_response(self.mechanism, self.user, self.token, self.host, self.port)
        return b"\x01" if self.mechanism == "oauthbearer" else b""
