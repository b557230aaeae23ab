"""Proves the sandbox Dovecot behaves as the other integration tests expect.

Only the standard library talks to the server here (imaplib, poplib, ssl), so a
failure points at the sandbox, not at quotawatch.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import poplib
import random
import re
import secrets
import shutil
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.corpus import PEOPLE, make_message
from sandbox.dovecot import (
    DEFAULT_IMAP_CAPABILITY,
    Dovecot,
    SandboxError,
    SandboxUser,
    _children,
    make_base_dir,
)

REQUIRED_CAPS = {"QUOTA", "STATUS=SIZE", "SAVEDATE", "UIDPLUS", "MOVE", "SPECIAL-USE"}
QUOTA_RE = re.compile(rb'"User quota" \(([^)]*)\)')
FETCH_RE = re.compile(rb'UID (\d+) INTERNALDATE "([^"]+)" FLAGS \(([^)]*)\)')


# ----------------------------------------------------------------------------- helpers


def tls_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def imaps(server: Dovecot) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL(
        server.host, server.imaps_port, ssl_context=tls_context(server.ca_file)
    )


def login(server: Dovecot, name: str, password: str) -> imaplib.IMAP4_SSL:
    conn = imaps(server)
    conn.login(name, password)
    return conn


def caps_after_login(conn: imaplib.IMAP4) -> set[str]:
    typ, data = conn.capability()
    assert typ == "OK"
    return {c.upper() for c in data[-1].decode().split()}


def imap_quota(conn: imaplib.IMAP4, mailbox: str = "INBOX") -> dict[str, tuple[int, int]]:
    typ, data = conn.getquotaroot(mailbox)
    assert typ == "OK", data
    flat = b" ".join(item for group in data for item in group)
    match = QUOTA_RE.search(flat)
    assert match, flat
    words = match.group(1).split()
    return {
        words[i].decode(): (int(words[i + 1]), int(words[i + 2])) for i in range(0, len(words), 3)
    }


def plain_lines(data: list[Any]) -> list[bytes]:
    """The untagged response lines that are plain bytes (no literals)."""
    return [item for item in data if isinstance(item, bytes)]


def imap_utf7(name: str) -> str:
    """RFC 3501 modified UTF-7, as the server uses on the wire."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def quoted(name: str) -> str:
    return '"' + imap_utf7(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def status(conn: imaplib.IMAP4, mailbox: str, items: str = "MESSAGES") -> dict[str, int]:
    typ, data = conn.status(quoted(mailbox), f"({items})")
    assert typ == "OK", data
    inner = data[0].rsplit(b"(", 1)[1].rstrip(b")").split()
    return {inner[i].decode(): int(inner[i + 1]) for i in range(0, len(inner), 2)}


def corpus(count: int, seed: int = 7) -> list[tuple[bytes, datetime, str]]:
    """*count* messages with dates deliberately out of order and assorted flags."""
    rng = random.Random(seed)
    base = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    flags = ["", "S", "FS", "RS", "T", "DS", "PS", "S"]
    result = []
    for i in range(count):
        date = base - timedelta(hours=rng.randrange(0, 3 * 365 * 24), seconds=rng.randrange(3600))
        data = make_message(
            rng, size=rng.randrange(600, 6000), date=date, sender=PEOPLE[1], recipient=PEOPLE[0]
        )
        result.append((data, date, flags[i % len(flags)]))
    return result


def vsize(data: bytes) -> int:
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


# ----------------------------------------------------------------------------- TLS


def test_implicit_tls_verified_with_ca_file(dovecot: Dovecot, user: SandboxUser) -> None:
    conn = imaps(dovecot)  # hostname check against the IP SAN 127.0.0.1
    try:
        assert conn.login(user.name, user.password)[0] == "OK"
    finally:
        conn.logout()
    ctx = tls_context(dovecot.ca_file)
    with (
        socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,  # DNS SAN
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.recv(100).startswith(b"* OK")
    pop = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ctx)
    try:
        assert pop.getwelcome().startswith(b"+OK")
    finally:
        pop.quit()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_refused_by_server(dovecot: Dovecot) -> None:
    def handshake(version: ssl.TLSVersion) -> str | None:
        ctx = tls_context(dovecot.ca_file)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
        with (
            socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version()

    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_1)


def test_other_ca_is_not_trusted(dovecot: Dovecot) -> None:
    assert dovecot.other_ca_file.read_bytes() != dovecot.ca_file.read_bytes()
    ctx = tls_context(dovecot.other_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ctx)
    plain = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            plain.starttls(ctx)
    finally:
        with contextlib.suppress(OSError):
            plain.shutdown()


def test_starttls_advertised_and_works(dovecot: Dovecot, user: SandboxUser) -> None:
    conn = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    try:
        assert "STARTTLS" in conn.capabilities
        assert "AUTH=PLAIN" in conn.capabilities
        conn.starttls(tls_context(dovecot.ca_file))
        assert "STARTTLS" not in conn.capabilities
        conn.login(user.name, user.password)
        assert caps_after_login(conn) >= REQUIRED_CAPS
    finally:
        conn.logout()


# ----------------------------------------------------------------------------- capabilities


def test_capabilities_after_login(dovecot: Dovecot, user: SandboxUser) -> None:
    conn = login(dovecot, user.name, user.password)
    try:
        caps = caps_after_login(conn)
    finally:
        conn.logout()
    assert caps >= REQUIRED_CAPS
    # The hard-coded list (written out when hiding capabilities) is exactly this Dovecot's.
    assert {c.upper() for c in DEFAULT_IMAP_CAPABILITY} == caps


def test_nosize_hides_status_size_and_savedate(
    dovecot: Dovecot, dovecot_nosize: Dovecot, user: SandboxUser
) -> None:
    full = login(dovecot, user.name, user.password)
    try:
        full_caps = caps_after_login(full)
    finally:
        full.logout()
    dovecot_nosize.add_user(user.name, user.password)
    conn = login(dovecot_nosize, user.name, user.password)
    try:
        caps = caps_after_login(conn)
        assert imap_quota(conn)["STORAGE"][1] == 10 * 1024
    finally:
        conn.logout()
    assert "STATUS=SIZE" not in caps
    assert "SAVEDATE" not in caps
    assert {"UIDPLUS", "MOVE", "SPECIAL-USE", "QUOTA", "IMAP4REV1"} <= caps
    assert caps == full_caps - {"STATUS=SIZE", "SAVEDATE"}


def test_noquota_has_no_quota_capability(dovecot_noquota: Dovecot) -> None:
    dovecot_noquota.add_user("nq", "secret-nq")
    conn = login(dovecot_noquota, "nq", "secret-nq")
    try:
        caps = caps_after_login(conn)
        assert "QUOTA" not in caps
        assert {"STATUS=SIZE", "SAVEDATE", "UIDPLUS"} <= caps
        with pytest.raises(imaplib.IMAP4.error):
            conn.getquotaroot("INBOX")
    finally:
        conn.logout()


def test_cannot_hide_unknown_capability() -> None:
    with pytest.raises(ValueError, match="cannot hide"):
        Dovecot(Path("/tmp/qw-unused"), hide_capabilities=["XYZZY"])
    with pytest.raises(ValueError, match="cannot hide"):
        Dovecot(Path("/tmp/qw-unused"), hide_capabilities=["IMAP4rev1"])


# ----------------------------------------------------------------------------- quota


def test_getquotaroot_matches_doveadm(dovecot: Dovecot) -> None:
    name, password = f"q{secrets.token_hex(3)}", secrets.token_urlsafe(9)
    dovecot.add_user(name, password, quota_bytes=3 * 1024 * 1024 + 512, quota_messages=500)
    msgs = [(data, when, "S") for data, when, _flags in corpus(40, seed=3)]
    dovecot.deliver_bulk(name, "INBOX", msgs)
    conn = login(dovecot, name, password)
    try:
        got = imap_quota(conn)
        assert got == {k: (v[0], v[1]) for k, v in dovecot.quota_get(name).items()}
        assert got["MESSAGE"] == (40, 500)
        assert got["STORAGE"][1] == (3 * 1024 * 1024 + 512 + 1023) // 1024
        assert abs(got["STORAGE"][0] - sum(vsize(m[0]) for m in msgs) / 1024) <= 1

        # APPEND and EXPUNGE change the usage at once, in IMAP and doveadm alike.
        big = make_message(
            random.Random(1),
            size=100_000,
            date=datetime.now(UTC),
            sender=PEOPLE[2],
            recipient=PEOPLE[0],
        )
        assert conn.append("INBOX", None, None, big)[0] == "OK"
        after = imap_quota(conn)
        assert after["MESSAGE"][0] == 41
        assert after["STORAGE"][0] >= got["STORAGE"][0] + 97
        assert dovecot.quota_get(name)["STORAGE"] == after["STORAGE"]
        conn.select("INBOX")
        conn.store("1:10", "+FLAGS.SILENT", r"(\Deleted)")
        conn.expunge()
        assert imap_quota(conn)["MESSAGE"][0] == 31
        assert dovecot.quota_get(name)["MESSAGE"] == (31, 500)
    finally:
        conn.logout()


def test_add_user_update_changes_quota_without_reload(dovecot: Dovecot, user: SandboxUser) -> None:
    conn = login(dovecot, user.name, user.password)
    try:
        assert imap_quota(conn)["STORAGE"] == (0, 10240)
    finally:
        conn.logout()
    dovecot.add_user(user.name, "new-password", quota_bytes=2 * 1024 * 1024)
    conn = login(dovecot, user.name, "new-password")
    try:
        assert imap_quota(conn)["STORAGE"] == (0, 2048)
    finally:
        conn.logout()
    assert dovecot.quota_get(user.name) == {"STORAGE": (0, 2048), "MESSAGE": (0, None)}


# ----------------------------------------------------------------------------- auth


def test_master_user_login(dovecot: Dovecot, user: SandboxUser) -> None:
    dovecot.deliver_bulk(user.name, "INBOX", corpus(3))
    conn = login(dovecot, f"{user.name}*{dovecot.master_user}", dovecot.master_password)
    try:
        assert conn.select("INBOX", readonly=True) == ("OK", [b"3"])
    finally:
        conn.logout()
    with pytest.raises(imaplib.IMAP4.error):
        login(dovecot, f"{user.name}*{dovecot.master_user}", "wrong")


def test_authenticate_plain_with_authzid(dovecot: Dovecot, user: SandboxUser) -> None:
    dovecot.deliver_bulk(user.name, "INBOX", corpus(2))
    conn = imaps(dovecot)
    try:
        token = f"{user.name}\0{dovecot.master_user}\0{dovecot.master_password}".encode()
        typ, _ = conn.authenticate("PLAIN", lambda _challenge: token)
        assert typ == "OK"
        assert conn.select("INBOX", readonly=True) == ("OK", [b"2"])
    finally:
        conn.logout()
    conn = imaps(dovecot)
    try:
        bad = f"{user.name}\0{dovecot.master_user}\0nope".encode()
        with pytest.raises(imaplib.IMAP4.error):
            conn.authenticate("PLAIN", lambda _challenge: bad)
    finally:
        conn.shutdown()


def test_failed_logins_are_fast_and_logged_without_password(
    dovecot: Dovecot, user: SandboxUser
) -> None:
    wrong = f"Wrong-{secrets.token_hex(8)}"
    started = time.monotonic()
    for name in (user.name, user.name, "no-such-user", user.name):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            login(dovecot, name, wrong)
    login(dovecot, user.name, user.password).logout()
    # No auth_failure_delay and no anvil penalty: five logins well under a second each.
    assert time.monotonic() - started < 3.0
    log = dovecot.log_file.read_text(errors="replace")
    assert f"passwd-file({user.name},127.0.0.1" in log and "Password mismatch" in log
    assert wrong not in log
    assert user.password not in log
    assert dovecot.master_password not in log


def test_kill_user_sessions_drops_connections(dovecot: Dovecot, user: SandboxUser) -> None:
    first = login(dovecot, user.name, user.password)
    second = login(dovecot, user.name, user.password)
    first.select("INBOX")
    dovecot.kill_user_sessions(user.name)
    for conn in (first, second):
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            for _ in range(3):
                conn.noop()
                time.sleep(0.1)
    dovecot.kill_user_sessions(user.name)  # nobody left: no error
    login(dovecot, user.name, user.password).logout()


# ----------------------------------------------------------------------------- bulk delivery


def test_deliver_bulk_thousand_messages(dovecot: Dovecot, user: SandboxUser) -> None:
    msgs = corpus(1000)
    started = time.monotonic()
    dovecot.deliver_bulk(user.name, "INBOX", msgs)
    assert time.monotonic() - started < 10

    conn = login(dovecot, user.name, user.password)
    try:
        counts = status(conn, "INBOX", "MESSAGES UNSEEN SIZE")
        assert counts["MESSAGES"] == 1000
        assert counts["UNSEEN"] == sum("S" not in m[2] for m in msgs)
        assert counts["SIZE"] == sum(vsize(m[0]) for m in msgs)
        conn.select("INBOX", readonly=True)
        typ, data = conn.fetch("1:*", "(UID INTERNALDATE FLAGS)")
        assert typ == "OK"
        rows = [FETCH_RE.search(line) for line in data if isinstance(line, bytes)]
        assert len(rows) == 1000 and all(rows)
        flag_names = {
            "S": r"\Seen",
            "F": r"\Flagged",
            "R": r"\Answered",
            "T": r"\Deleted",
            "D": r"\Draft",
        }
        for (_data, when, flags), row in zip(msgs, rows, strict=True):  # UID order = given order
            assert row is not None
            internal = datetime.strptime(row.group(2).decode(), "%d-%b-%Y %H:%M:%S %z")
            assert internal == when
            got_flags = set(row.group(3).decode().split()) - {r"\Recent"}
            assert got_flags == {flag_names[f] for f in flags if f in flag_names}
        typ, data = conn.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        first = data[0]
        assert typ == "OK" and isinstance(first, tuple) and b"Message-ID" in first[1]
    finally:
        conn.logout()
    assert dovecot.quota_get(user.name)["MESSAGE"] == (1000, None)


def test_folder_names_with_space_hierarchy_and_non_ascii(
    dovecot: Dovecot, user: SandboxUser
) -> None:
    folders = {
        "Entwürfe": 3,
        "Archive/2023": 4,
        "My Folder": 2,
        "Trash": 5,
        "Ärger & Co/Q1 2024": 1,
    }
    for offset, (folder, count) in enumerate(folders.items()):
        dovecot.deliver_bulk(user.name, folder, corpus(count, seed=offset))
    # LAYOUT=fs: modified UTF-7 directory names, "/" hierarchy as sub-directories.
    root = dovecot.maildir(user.name)
    assert (root / "Entw&APw-rfe" / "cur").is_dir()
    assert (root / "Archive" / "2023" / "cur").is_dir()
    assert (root / "My Folder" / "cur").is_dir()
    assert dovecot.folder_path(user.name, "Entwürfe") == root / "Entw&APw-rfe"

    conn = login(dovecot, user.name, user.password)
    try:
        typ, listing = conn.list()
        assert typ == "OK"
        names = {line.decode().split(' "/" ', 1)[1].strip('"') for line in plain_lines(listing)}
        for folder in folders:
            assert imap_utf7(folder) in names
            assert status(conn, folder)["MESSAGES"] == folders[folder]
        assert {"INBOX", "Junk", "Sent", "Drafts"} <= names
        special = {
            line.decode()
            for line in plain_lines(listing)
            if b"\\Trash" in line or b"\\Junk" in line
        }
        assert any(s.endswith(" Trash") for s in special)
        typ, subscribed = conn.lsub()
        assert typ == "OK"
        sub_names = {
            line.decode().split(' "/" ', 1)[1].strip('"') for line in plain_lines(subscribed)
        }
        assert {"Trash", "Junk", "Sent", "Drafts", imap_utf7("Entwürfe")} <= sub_names
        typ, data = conn.select(quoted("Archive/2023"))
        assert (typ, data) == ("OK", [b"4"])
    finally:
        conn.logout()


def test_deliver_bulk_rejects_unknown_flags(dovecot: Dovecot, user: SandboxUser) -> None:
    with pytest.raises(ValueError, match="flags"):
        dovecot.deliver_bulk(
            user.name, "INBOX", [(b"Subject: x\r\n\r\nx\r\n", datetime.now(UTC), "X")]
        )


# ----------------------------------------------------------------------------- POP3


def test_pop3_stat_and_uidl_over_tls_and_stls(dovecot: Dovecot, user: SandboxUser) -> None:
    msgs = corpus(7, seed=11)
    dovecot.deliver_bulk(user.name, "INBOX", msgs)
    ctx = tls_context(dovecot.ca_file)
    total = sum(vsize(m[0]) for m in msgs)

    implicit = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ctx)
    try:
        implicit.user(user.name)
        implicit.pass_(user.password)
        assert implicit.stat() == (7, total)
        _resp, lines, _octets = implicit.uidl()
        uidls = [line.split()[1] for line in lines]
        assert len(uidls) == 7 and len(set(uidls)) == 7
        # pop3_uidl_format = %08Xu%08Xv; Dovecot's %X prints lower-case hex.
        assert all(re.fullmatch(rb"[0-9a-f]{16}", u) for u in uidls)
    finally:
        implicit.quit()

    plain = poplib.POP3(dovecot.host, dovecot.pop3_port)
    try:
        assert "STLS" in plain.capa()
        plain.stls(ctx)
        plain.user(user.name)
        plain.pass_(user.password)
        assert plain.stat() == (7, total)
        assert [line.split()[1] for line in plain.uidl()[1]] == uidls
    finally:
        plain.quit()


# ----------------------------------------------------------------------------- lifecycle


def test_extra_instance_starts_fast_and_stops_without_leftovers(dovecot: Dovecot) -> None:
    base = make_base_dir("qw-extra-")
    try:
        started = time.monotonic()
        with Dovecot(base, name="extra") as extra:
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"start() took {elapsed:.2f}s"
            ports = {extra.imap_port, extra.imaps_port, extra.pop3_port, extra.pop3s_port}
            assert len(ports) == 4
            session_ports = {
                dovecot.imap_port,
                dovecot.imaps_port,
                dovecot.pop3_port,
                dovecot.pop3s_port,
            }
            assert not ports & session_ports
            extra.add_user("x", "y")
            login(extra, "x", "y").logout()
            master = int(extra.pid_file.read_text())
            family = [master, *_children(master)]
            assert len(family) > 3
        for pid in family:
            assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), pid
        extra.stop()  # idempotent
        assert not extra.running
        with pytest.raises(OSError):
            socket.create_connection((extra.host, extra.imap_port), timeout=1).close()
        assert dovecot.running  # the session server is untouched
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stop_without_pid_file_still_stops(dovecot: Dovecot) -> None:
    base = make_base_dir("qw-nopid-")
    try:
        server = Dovecot(base, name="nopid").start()
        master = int(server.pid_file.read_text())
        server.pid_file.unlink()  # e.g. base_dir removed under a running server
        assert server.running
        server.stop()
        assert not Path(f"/proc/{master}").exists() or _state(master) in ("Z", "X")
        assert not server.running
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_base_dir_must_be_short() -> None:
    with pytest.raises(SandboxError, match="longer"):
        Dovecot(Path("/tmp/" + "x" * 80))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"
