"""Fixtures that start throw-away Dovecot servers (see sandbox/dovecot.py).

* ``dovecot``          -- session-wide server with everything advertised.
* ``dovecot_nosize``   -- session-wide server hiding STATUS=SIZE and SAVEDATE.
* ``dovecot_nolist``   -- session-wide server hiding LIST-STATUS (STATUS per folder).
* ``dovecot_noquota``  -- session-wide server without the imap_quota plugin (no QUOTA).
* ``dovecot_virtual``  -- session-wide server with a virtual ``Virtual/All`` (``\\All``) folder.
* ``dovecot_plain``    -- session-wide server hiding CONDSTORE (with QRESYNC, which implies
                          it) and WITHIN: no mod-sequences, no server-side clock.
* ``dovecot_noqresync`` -- session-wide server hiding QRESYNC only: CONDSTORE without
                          expunges reported by UID (as Gmail).
* ``dovecot_exchange`` -- session-wide server that looks like Exchange Online over IMAP: no
                          QUOTA, STATUS=SIZE, LIST-STATUS, SPECIAL-USE or SAVEDATE.
* ``dovecot_gmail``    -- session-wide server with Gmail's folder layout: ``[Gmail]/Trash``
                          (``\\Trash``), ``[Gmail]/Spam`` (``\\Junk``), ... and the virtual
                          ``Virtual/All Mail`` (``\\All``) of everything but Trash and Spam.
* ``oauth``            -- session-wide local OAuth2/OpenID provider over TLS
                          (sandbox.oauth_server.OAuthServer).
* ``dovecot_oauth2``   -- session-wide server that also takes XOAUTH2/OAUTHBEARER tokens,
                          checked by introspection at ``oauth``.
* ``dovecot_api``      -- session-wide server with the doveadm HTTP API switched on (HTTPS,
                          ``doveadm_url``, ``doveadm_key_file``) and an iterable userdb.
* ``slapd``            -- session-wide OpenLDAP slapd (sandbox.slapd.Slapd) serving the
                          certificate of ``dovecot``'s CA: ldap:// with StartTLS, ldaps://,
                          size limit 50 (paged searches may go past it).
* ``user``             -- a fresh user (``sandbox.dovecot.SandboxUser``: name, password,
                          dovecot) with a random password and 10 MiB quota on ``dovecot``.

Servers start lazily, on first use. Each lives in a short, world-traversable
directory from ``sandbox.dovecot.make_base_dir()`` (pytest's own tmp dirs are mode
0700 below /tmp/pytest-of-root, which Dovecot's unprivileged users cannot enter
when the tests run as root), removed at the end unless QW_KEEP_SANDBOX=1 is set.
All tests below this directory get the ``integration`` marker.
"""

from __future__ import annotations

import imaplib
import itertools
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.dovecot import DOVECOT_BIN, Dovecot, SandboxUser, make_base_dir
from sandbox.dovecot_oauth2 import OAuth2Passdb
from sandbox.oauth_server import OAuthServer
from sandbox.slapd import SLAPD_BIN, Slapd
from sandbox.slapd import make_base_dir as make_slapd_dir

_HERE = Path(__file__).parent
_user_numbers = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _serve(
    name: str,
    hide: tuple[str, ...] = (),
    virtual_all: bool = False,
    oauth2: OAuth2Passdb | None = None,
    doveadm_api: bool = False,
    gmail_layout: bool = False,
) -> Iterator[Dovecot]:
    if not Path(DOVECOT_BIN).exists():
        why = (
            f"Dovecot is not installed ({DOVECOT_BIN}); apt-get install dovecot-imapd dovecot-pop3d"
        )
        if os.environ.get("CI"):
            pytest.fail(why)  # in CI a missing server is a broken set-up, never a silent skip
        pytest.skip(why)
    base = make_base_dir(f"qw-{name}-")
    server = Dovecot(
        base,
        hide_capabilities=hide,
        name=name,
        virtual_all=virtual_all,
        oauth2=oauth2,
        doveadm_api=doveadm_api,
        gmail_layout=gmail_layout,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if os.environ.get("QW_KEEP_SANDBOX") != "1":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in-process points the root logger at pytest's captured stderr;
    put the handlers back afterwards, so that a server thread of a longer-lived fixture (the
    SMTP sink) never logs into a stream pytest has closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    yield from _serve("it")


@pytest.fixture(scope="session")
def dovecot_nosize() -> Iterator[Dovecot]:
    yield from _serve("nosize", ("STATUS=SIZE", "SAVEDATE"))


@pytest.fixture(scope="session")
def dovecot_nolist() -> Iterator[Dovecot]:
    yield from _serve("nolist", ("LIST-STATUS",))


@pytest.fixture(scope="session")
def dovecot_noquota() -> Iterator[Dovecot]:
    yield from _serve("noquota", ("QUOTA",))


@pytest.fixture(scope="session")
def dovecot_virtual() -> Iterator[Dovecot]:
    yield from _serve("virtual", virtual_all=True)


@pytest.fixture(scope="session")
def dovecot_plain() -> Iterator[Dovecot]:
    yield from _serve("plain", ("CONDSTORE", "QRESYNC", "WITHIN"))


@pytest.fixture(scope="session")
def dovecot_noqresync() -> Iterator[Dovecot]:
    yield from _serve("noqresync", ("QRESYNC",))


@pytest.fixture(scope="session")
def dovecot_exchange() -> Iterator[Dovecot]:
    yield from _serve(
        "exchange", ("QUOTA", "STATUS=SIZE", "LIST-STATUS", "SPECIAL-USE", "SAVEDATE")
    )


@pytest.fixture(scope="session")
def dovecot_gmail() -> Iterator[Dovecot]:
    yield from _serve("gmail", gmail_layout=True)


@pytest.fixture(scope="session")
def oauth() -> Iterator[OAuthServer]:
    base = make_base_dir("qw-oauth-")  # world-traversable: Dovecot's auth process reads the CA
    server = OAuthServer(base)
    try:
        yield server.start()
    finally:
        server.stop()
        if os.environ.get("QW_KEEP_SANDBOX") != "1":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_oauth2(oauth: OAuthServer) -> Iterator[Dovecot]:
    yield from _serve("oauth2", oauth2=OAuth2Passdb(oauth.introspection_url, oauth.ca_file))


@pytest.fixture(scope="session")
def dovecot_api() -> Iterator[Dovecot]:
    yield from _serve("api", doveadm_api=True)


def serve_slapd(dovecot: Dovecot, size_limit: int | None = 50) -> Iterator[Slapd]:
    """A slapd with ``dovecot``'s certificate, stopped and removed at the end."""
    if not Path(SLAPD_BIN).exists():
        why = f"slapd is not installed ({SLAPD_BIN}); apt-get install slapd ldap-utils"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    base = make_slapd_dir()
    server = Slapd.for_dovecot(base, dovecot, size_limit=size_limit)
    try:
        yield server.start()
    finally:
        server.stop()
        if os.environ.get("QW_KEEP_SANDBOX") != "1":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd(dovecot: Dovecot) -> Iterator[Slapd]:
    yield from serve_slapd(dovecot)


@pytest.fixture
def user(dovecot: Dovecot) -> SandboxUser:
    name = f"u{next(_user_numbers)}"
    password = secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    return SandboxUser(name, password, dovecot)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first words of each command quotawatch sends (never a login's arguments)."""
    out: list[str] = []
    original = imaplib.IMAP4.send

    def send(self: imaplib.IMAP4, data: bytes) -> None:
        for line in bytes(data).split(b"\r\n"):  # a write may carry several commands
            words = line.split()
            if len(words) > 1 and words[0].isalnum() and words[1].isalpha():
                keep = 1 if words[1].upper() in (b"AUTHENTICATE", b"LOGIN") else 8
                out.append(b" ".join(words[1 : 1 + keep]).decode())
        original(self, data)

    monkeypatch.setattr(imaplib.IMAP4, "send", send)
    return out
