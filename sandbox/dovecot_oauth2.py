"""The oauth2 passdb of a sandbox Dovecot: token introspection at the test kit's OAuth2 server.

Dovecot 2.3's oauth2 passdb POSTs the token to the introspection URL and requires the SASL user
to equal one attribute of the answer. An app-only token (Microsoft client credentials) is valid
for every mailbox the app was granted, not for one user, so the answer of
:class:`sandbox.oauth_server.OAuthServer` carries them all (``mailboxes``: ``",alice,bob,"``) and
the check moves to ``pass_attrs``: ``allow_nets`` lets the login through from loopback only when
the SASL user is among them (``%{if;...;*;...}`` is a wildcard match). ``username_format`` is a
constant so the mandatory username comparison always holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MECHANISMS = "xoauth2 oauthbearer"
#: any loopback client may log in / nobody may (TEST-NET-1 is never a client here)
_ALLOWED, _DENIED = "127.0.0.0/8", "192.0.2.1/32"


@dataclass(frozen=True)
class OAuth2Passdb:
    """Where Dovecot checks tokens: the introspection URL and the CA that signed its certificate."""

    introspection_url: str
    ca_file: Path


def settings(passdb: OAuth2Passdb) -> str:
    """The ``args`` file of the oauth2 passdb."""
    check = f"%{{if;%{{oauth2:mailboxes}};*;*,%u,*;{_ALLOWED};{_DENIED}}}"
    return (
        f"introspection_mode = post\n"
        f"introspection_url = {passdb.introspection_url}\n"
        f"tls_ca_cert_file = {passdb.ca_file}\n"
        "username_attribute = resource\n"
        "username_format = mail\n"
        "active_attribute = active\n"
        "active_value = true\n"
        f"pass_attrs = allow_nets={check}\n"
        "timeout_msecs = 10000\n"
    )


def passdb_block(args_file: Path) -> str:
    """The passdb section for dovecot.conf (only the OAuth2 mechanisms reach it)."""
    return f"passdb {{\n  driver = oauth2\n  mechanisms = {MECHANISMS}\n  args = {args_file}\n}}\n"
