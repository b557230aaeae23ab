"""A private, throw-away Dovecot (IMAP + POP3) for integration tests and the demo.

Everything lives below one ``base_dir``: the generated ``dovecot.conf``, the
throw-away CA and server certificate (``ssl/``), the passwd-files (``auth/``),
the users' homes with their Maildirs (``home/<user>/Maildir``), Dovecot's
runtime sockets (``run/``), its state (``state/``) and its log
(``dovecot.log``). Nothing in ``/etc`` is read or written and Dovecot listens on
127.0.0.1 only, on free ports picked at :meth:`Dovecot.start`.

Privileges
----------
Run as root, mail is owned by the unprivileged system user ``vmail`` (created
with ``useradd --system`` when missing); Dovecot's own helper processes use the
Debian package's ``dovecot`` and ``dovenull`` users. Run as an ordinary user,
everything runs as that user.

As root, ``base_dir`` and every directory above it must be world-traversable
(``o+x``), because the ``vmail``, ``dovecot`` and ``dovenull`` users have to reach
the homes and sockets below it. pytest's ``tmp_path`` lives below
``/tmp/pytest-of-root`` (mode 0700) and does *not* qualify: use
:func:`make_base_dir` (``tempfile.mkdtemp`` + ``chmod 0755``). UNIX socket paths
are limited to 108 bytes, so ``base_dir`` must also be short (see
:data:`MAX_BASE_DIR_LEN`); :func:`make_base_dir` gives paths like
``/tmp/qw-dovecot-abcd1234``.

Folders
-------
``mail_location = maildir:~/Maildir:LAYOUT=fs``: INBOX is the Maildir root, a
folder ``Archive/2023`` is the directory ``Maildir/Archive/2023``, names are
stored in modified UTF-7 (``Entwürfe`` -> ``Entw&APw-rfe``). The IMAP hierarchy
separator is ``/``; dots and spaces in names are fine.

Authentication
--------------
One passwd-file per user (``auth/users/<name>``, ``{PLAIN.b64}`` passwords, the
quota rule as ``userdb_quota_rule``), so :meth:`Dovecot.add_user` takes effect
without a reload; Dovecot re-reads a changed file only once per second, so
*changing* an existing user waits for the next second. A master passdb holds
``admin``: log in as ``alice*admin`` with ``master_password``, or SASL PLAIN with
authzid ``alice``, authcid ``admin``. Mechanisms PLAIN and LOGIN, plaintext auth
allowed (loopback only), STARTTLS/STLS offered on the plain ports. Failed logins
answer immediately: two non-authenticating static passdbs add the ``nodelay``
field, which skips both ``auth_failure_delay`` and anvil's per-IP auth penalty
(up to 15 s per login from 127.0.0.1 after a few failures, which would slow every
later test). Failures are logged (``auth_verbose``), passwords never.

Hiding capabilities
-------------------
Dovecot 2.3 has no "remove" syntax for ``imap_capability``; a hiding instance sets
the whole list (:data:`DEFAULT_IMAP_CAPABILITY` minus the hidden names). The same
setting drives imap-login, so such an instance also advertises that list *before*
login (plus STARTTLS and AUTH=...). ``QUOTA`` is hidden by not loading imap_quota.

Quota
-----
The ``count`` backend with ``quota_vsizes = yes``: usage is the sum of the
messages' virtual (CRLF) sizes kept in Dovecot's indexes, so IMAP GETQUOTAROOT,
``doveadm quota get`` and RFC822.SIZE all agree and APPEND/EXPUNGE update the
usage at once. One root, ``User quota``; one rule per user (storage, optionally
messages), taken from the user's passwd-file line. Dovecot's default
``quota_grace`` (10 %) is left in place.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from sandbox.dovecot_oauth2 import MECHANISMS as OAUTH2_MECHANISMS
from sandbox.dovecot_oauth2 import OAuth2Passdb, passdb_block
from sandbox.dovecot_oauth2 import settings as oauth2_settings

__all__ = [
    "DEFAULT_IMAP_CAPABILITY",
    "MAX_BASE_DIR_LEN",
    "DoveadmError",
    "Dovecot",
    "SandboxError",
    "SandboxUser",
    "make_base_dir",
]

DOVECOT_BIN = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM_BIN = shutil.which("doveadm") or "/usr/bin/doveadm"
OPENSSL_BIN = shutil.which("openssl") or "/usr/bin/openssl"

#: Longest accepted ``base_dir`` (Dovecot's sockets below it must fit in sun_path).
MAX_BASE_DIR_LEN = 64

#: Dovecot 2.3.19's post-login CAPABILITY list as this sandbox configures it: the
#: built-in ``CAPABILITY_STRING`` (src/imap/imap-common.h), then what the imap
#: process appends for these settings (LITERAL+, NOTIFY, SPECIAL-USE) and QUOTA
#: from the imap_quota plugin. Setting ``imap_capability`` to an explicit list
#: suppresses all of the appended ones, so a hiding instance writes out this whole
#: list minus the hidden names (and leaves the imap_quota plugin out for QUOTA).
_CAPABILITY_TEXT = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN"
    " NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES"
    " WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW"
    " STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE QUOTA"
)
DEFAULT_IMAP_CAPABILITY: tuple[str, ...] = tuple(_CAPABILITY_TEXT.split())

SPECIAL_USE_FOLDERS: dict[str, str] = {
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
}

#: the special-use folders of a Dovecot that looks like Gmail (``gmail_layout=True``): a
#: ``[Gmail]/`` hierarchy (itself \Noselect); Trash and Spam are the only folders where a
#: removal frees quota on Gmail, "All Mail" (``\All``) is a virtual view of all the others
GMAIL_FOLDERS: dict[str, str] = {
    "[Gmail]/Drafts": "\\Drafts",
    "[Gmail]/Sent Mail": "\\Sent",
    "[Gmail]/Spam": "\\Junk",
    "[Gmail]/Trash": "\\Trash",
}

_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9/._+-]+$")
_MAILDIR_FLAGS = frozenset("DFPRST")
_START_ATTEMPTS = 4
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


class SandboxError(RuntimeError):
    """The sandbox Dovecot could not be set up, started or queried."""


class DoveadmError(SandboxError):
    """A ``doveadm`` command exited non-zero."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.command = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"doveadm {' '.join(args)} failed with exit code {returncode}: {stderr.strip()}"
        )


@dataclass(frozen=True)
class SandboxUser:
    """A mailbox on a sandbox server (what the ``user`` test fixture returns)."""

    name: str
    password: str
    dovecot: Dovecot


def make_base_dir(prefix: str = "qw-dovecot-") -> Path:
    """Create a short, world-traversable (0755) directory in the system temp dir.

    The caller owns it and should remove it (``shutil.rmtree``) after
    :meth:`Dovecot.stop`.
    """
    # /tmp rather than $TMPDIR: short, and world-traversable even when TMPDIR is not.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    path.chmod(0o755)
    return path


class _Identity:
    """Which system users Dovecot and the mail processes run as."""

    def __init__(self) -> None:
        self.root = os.geteuid() == 0
        if self.root:
            self.mail_uid, self.mail_gid = _ensure_vmail_user()
            self.internal_user = _first_existing_user("dovecot")
            self.login_user = _first_existing_user("dovenull")
        else:
            me = pwd.getpwuid(os.geteuid())
            self.mail_uid, self.mail_gid = me.pw_uid, os.getegid()
            self.internal_user = me.pw_name
            self.login_user = me.pw_name
        self.internal_gid = pwd.getpwnam(self.internal_user).pw_gid
        self.internal_group = grp.getgrgid(self.internal_gid).gr_name


def _first_existing_user(name: str) -> str:
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(
            f"system user {name!r} is missing; install Debian's dovecot-core package"
        ) from None
    return name


def _ensure_vmail_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"],
            check=False,
            capture_output=True,
            text=True,
        )
        try:
            entry = pwd.getpwnam("vmail")
        except KeyError:
            raise SandboxError("could not create the system user 'vmail'") from None
    return entry.pw_uid, entry.pw_gid


def _free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 right now (all bound at once, so distinct)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (comm) S ..." -- comm may contain spaces/parens, so split at the last ")".
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _master_pid(pid_file: Path, conf_file: Path, known_pid: int | None = None) -> int | None:
    """The live Dovecot master started with *conf_file*: from the pid file, else *known_pid*."""
    candidates: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        candidates.append(int(pid_file.read_text().split()[0]))
    if known_pid is not None:
        candidates.append(known_pid)
    for pid in candidates:
        if _pid_alive(pid) and _runs_config(pid, conf_file):
            return pid
    return None


def _runs_config(pid: int, conf_file: Path) -> bool:
    """Whether *pid* is a ``dovecot -c conf_file`` master (guards against pid reuse)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc access: trust the pid file
    return os.fsencode(conf_file) in argv and os.path.basename(argv[0]).startswith(b"dovecot")


def _terminate(
    pid_file: Path, conf_file: Path, known_pid: int | None = None, timeout: float = _STOP_TIMEOUT
) -> None:
    """SIGTERM the master (as ``doveadm stop`` does) and wait until it and its children are gone."""
    pid = _master_pid(pid_file, conf_file, known_pid)
    if pid is None:
        with contextlib.suppress(OSError):
            pid_file.unlink()
        return
    family = [pid, *_children(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_pid_alive(p) for p in family):
            break
        time.sleep(0.02)
    else:
        for p in family:
            if _pid_alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while any(_pid_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.02)
    with contextlib.suppress(OSError):
        pid_file.unlink()


def _vsize(data: bytes) -> int:
    """Size of *data* with every bare LF counted as CRLF (IMAP's RFC822.SIZE)."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _as_timestamp(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class Dovecot:
    """One sandbox Dovecot instance below *base_dir*; see the module docstring.

    ``hide_capabilities`` names IMAP capabilities that must not be advertised
    (e.g. ``"STATUS=SIZE"``, ``"SAVEDATE"``; ``"QUOTA"`` leaves the imap_quota
    plugin unloaded). ``name`` shows up in process titles, the greeting and the CA
    names. ``stop_at_exit`` (default ``True``) stops the server when the Python
    process exits or the object is garbage-collected; the demo turns it off so the
    server outlives ``python -m sandbox demo-up``. ``virtual_all=True`` adds the
    virtual plugin's folder ``Virtual/All`` with the special-use flag ``\\All``: a
    view of every message in every other folder, INBOX included (as Gmail's All
    Mail), where an EXPUNGE removes the message from the folder it is kept in.
    ``gmail_layout=True`` looks like Gmail's folder list: the special-use folders are
    ``[Gmail]/Trash`` (``\\Trash``), ``[Gmail]/Spam`` (``\\Junk``), ``[Gmail]/Sent Mail``,
    ``[Gmail]/Drafts`` (:data:`GMAIL_FOLDERS`) instead of Trash, Junk, ...; with it comes the
    virtual ``\\All`` folder, named ``Virtual/All Mail`` and, as Gmail's, showing every folder
    but Trash and Spam. (Dovecot cannot put a virtual folder inside a real hierarchy: a
    namespace ``[Gmail]/`` would take ``[Gmail]/Trash`` too, so the view keeps its own prefix;
    quotawatch knows it by its ``\\All`` flag, as it would on Gmail.)
    ``doveadm_api=True`` switches on Dovecot's doveadm HTTP API (``doveadm_url``,
    HTTPS with the sandbox certificate, key ``doveadm_api_key``, also in
    ``doveadm_key_file``) and keeps every user in one iterable userdb file, so
    ``doveadm user '*'`` and ``quota get -A`` work; other instances are unchanged.

    After :meth:`start`: ``host`` (127.0.0.1), ``imap_port`` (STARTTLS offered),
    ``imaps_port``, ``pop3_port`` (STLS offered), ``pop3s_port``, ``ca_file``,
    ``doveadm_port`` (0 without ``doveadm_api``), ``other_ca_file``, ``master_user`` / ``master_password``; also ``conf_file``,
    ``log_file`` and ``base_dir``. Usable as a context manager.
    """

    host: str = "127.0.0.1"
    master_user: str = "admin"

    def __init__(
        self,
        base_dir: Path,
        *,
        hide_capabilities: Sequence[str] = (),
        name: str = "sandbox",
        stop_at_exit: bool = True,
        virtual_all: bool = False,
        oauth2: OAuth2Passdb | None = None,
        doveadm_api: bool = False,
        gmail_layout: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        if len(str(self.base_dir)) > MAX_BASE_DIR_LEN:
            raise SandboxError(
                f"base_dir {self.base_dir} is longer than {MAX_BASE_DIR_LEN} characters "
                "(Dovecot's socket paths would not fit); use sandbox.dovecot.make_base_dir()"
            )
        if not _SAFE_PATH_RE.match(str(self.base_dir)):
            raise SandboxError(
                f"base_dir {self.base_dir} contains characters unsafe in dovecot.conf"
            )
        if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
            raise ValueError(f"invalid instance name {name!r}")
        self.name = name
        #: also accept OAuth2 tokens (XOAUTH2, OAUTHBEARER), checked at this introspection URL
        self.oauth2 = oauth2
        self.stop_at_exit = stop_at_exit
        self.virtual_all = virtual_all or gmail_layout
        self.gmail_layout = gmail_layout
        #: special-use folder name -> flag, created for every user
        self.special_folders = GMAIL_FOLDERS if gmail_layout else SPECIAL_USE_FOLDERS
        #: the virtual \\All folder's name below ``Virtual/``
        self.all_name = "All Mail" if gmail_layout else "All"
        self.doveadm_api = doveadm_api
        self.hide_capabilities: tuple[str, ...] = tuple(c.upper() for c in hide_capabilities)
        known = {c.upper() for c in DEFAULT_IMAP_CAPABILITY}
        unknown = [c for c in self.hide_capabilities if c not in known]
        if unknown or "IMAP4REV1" in self.hide_capabilities:
            raise ValueError(
                f"cannot hide {unknown or ['IMAP4rev1']}: not among the advertised "
                f"{' '.join(DEFAULT_IMAP_CAPABILITY)}"
            )

        self.conf_file = self.base_dir / "dovecot.conf"
        self.log_file = self.base_dir / "dovecot.log"
        self.run_dir = self.base_dir / "run"
        self.state_dir = self.base_dir / "state"
        self.ssl_dir = self.base_dir / "ssl"
        self.auth_dir = self.base_dir / "auth"
        self.users_dir = self.auth_dir / "users"
        self.home_root = self.base_dir / "home"
        self.ca_file = self.ssl_dir / "ca.pem"
        self.other_ca_file = self.ssl_dir / "other-ca.pem"
        self.cert_file = self.ssl_dir / "server.pem"
        self.key_file = self.ssl_dir / "server.key"
        self.master_file = self.auth_dir / "master-users"
        self.pid_file = self.run_dir / "master.pid"
        self.userdb_file = self.auth_dir / "userdb"
        self.doveadm_key_file = self.base_dir / "doveadm-api.key"

        self.imap_port = 0
        self.imaps_port = 0
        self.pop3_port = 0
        self.pop3s_port = 0
        self.doveadm_port = 0
        self.doveadm_api_key = ""
        self.master_password = ""
        self._ident: _Identity | None = None
        self._pid: int | None = None
        self._finalizer: weakref.finalize[..., Dovecot] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Dovecot:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"Dovecot({str(self.base_dir)!r}, name={self.name!r}, imap={self.imap_port}, "
            f"imaps={self.imaps_port}, pop3={self.pop3_port}, pop3s={self.pop3s_port})"
        )

    @property
    def running(self) -> bool:
        """Whether this instance's master process (``run/master.pid``) is alive."""
        return _master_pid(self.pid_file, self.conf_file, self._pid) is not None

    @property
    def ident(self) -> _Identity:
        if self._ident is None:
            self._ident = _Identity()
        return self._ident

    def start(self) -> Dovecot:
        """Generate certificates and config, start Dovecot, wait until every port answers."""
        if self.running:
            raise SandboxError(f"a Dovecot is already running from {self.base_dir}")
        ident = self.ident
        self._check_reachable()
        for directory, mode in (
            (self.base_dir, 0o755),
            (self.ssl_dir, 0o755),
            (self.auth_dir, 0o755),
            (self.users_dir, 0o750),
            (self.home_root, 0o755),
            (self.state_dir, 0o750),
        ):
            directory.mkdir(mode=mode, parents=True, exist_ok=True)
            directory.chmod(mode)
        if ident.root:
            os.chown(self.users_dir, 0, ident.internal_gid)
        self._make_certificates()
        self._write_master_user()
        if self.doveadm_api:
            self._write_api_key()
            if not self.userdb_file.exists():
                self._write_auth_file(self.userdb_file, "")
        if self.virtual_all:
            definition = self.base_dir / "virtual" / self.all_name / "dovecot-virtual"
            definition.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            bins = "-[Gmail]/Trash\n-[Gmail]/Spam\n" if self.gmail_layout else ""
            definition.write_text(f"*\n-Virtual/*\n{bins}  all\n")
            definition.chmod(0o644)
        if self.oauth2 is not None:
            self._write_auth_file(self.auth_dir / "oauth2.conf.ext", oauth2_settings(self.oauth2))

        last_error = ""
        for _ in range(_START_ATTEMPTS):
            ports = _free_ports(5)
            self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port = ports[:4]
            self.doveadm_port = ports[4] if self.doveadm_api else 0
            self.conf_file.write_text(self._config())
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            stderr_file = self.base_dir / "dovecot.stderr"
            with stderr_file.open("wb") as err:
                proc = subprocess.run(
                    [DOVECOT_BIN, "-c", str(self.conf_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    check=False,
                    timeout=30,
                )
            errors = stderr_file.read_text(errors="replace")
            if proc.returncode != 0:
                last_error = errors + self._log_tail(log_offset)
                if "Address already in use" in last_error:
                    continue
                raise SandboxError(
                    f"dovecot failed to start (exit {proc.returncode}): {last_error}"
                )
            try:
                self._wait_ready(log_offset)
            except _PortRace as exc:
                _terminate(self.pid_file, self.conf_file)
                last_error = str(exc)
                continue
            break
        else:
            raise SandboxError(f"dovecot could not bind free ports: {last_error}")
        # Remembered so stop() works even if the pid file (or base_dir) is gone.
        self._pid = _master_pid(self.pid_file, self.conf_file)
        if self.stop_at_exit:
            self._finalizer = weakref.finalize(
                self, _terminate, self.pid_file, self.conf_file, self._pid
            )
        return self

    def stop(self) -> None:
        """Terminate the master and all its processes; waits for them. Idempotent."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _terminate(self.pid_file, self.conf_file, self._pid)
        self._pid = None

    # ------------------------------------------------------------------ users

    def add_user(
        self,
        user: str,
        password: str,
        *,
        quota_bytes: int = 10 * 1024 * 1024,
        quota_messages: int | None = None,
    ) -> None:
        """Create (or update) *user*; effective for the next login, no reload needed.

        ``quota_bytes=0`` means no storage limit. The Maildir is created with the
        special-use folders Trash, Junk, Sent and Drafts (auto-subscribed).
        """
        self.add_users([(user, password, quota_bytes, quota_messages)])

    def add_users(self, users: Iterable[tuple[str, str, int, int | None]]) -> None:
        """Create (or update) many users at once: ``(name, password, quota_bytes, quota_messages)``.

        With ``doveadm_api`` the shared userdb file is rewritten once and the call waits
        for the next second (Dovecot re-reads a changed passwd-file at most once a second).
        """
        changed = False
        lines: dict[str, str] = {}
        for user, password, quota_bytes, quota_messages in users:
            line = self._user_line(user, password, quota_bytes, quota_messages)
            lines[user] = line
            path = self.users_dir / user
            try:
                previous: str | None = path.read_text()
            except FileNotFoundError:
                previous = None
            if previous == line:
                continue
            self._write_auth_file(path, line)
            changed = changed or previous is not None
        if self.doveadm_api and lines:
            self._update_userdb(lines)
            changed = True
        if changed:
            # Dovecot re-stats a passwd-file at most once per second (per auth
            # process clock tick), so a change is only seen from the next second on.
            time.sleep(1.05 - time.time() % 1.0)

    def _user_line(
        self, user: str, password: str, quota_bytes: int, quota_messages: int | None
    ) -> str:
        if not _USERNAME_RE.match(user):
            raise ValueError(f"invalid user name {user!r}")
        if quota_bytes < 0 or (quota_messages is not None and quota_messages < 0):
            raise ValueError("quota limits must be >= 0")
        ident = self.ident
        home = self.home_root / user
        maildir = home / "Maildir"
        for folder in (maildir, *(maildir / name for name in self.special_folders)):
            for sub in ("cur", "new", "tmp"):
                self._mail_mkdir(folder / sub)
        rule = f"*:storage={quota_bytes}B"
        if quota_messages is not None:
            rule += f":messages={quota_messages}"
        secret = base64.b64encode(password.encode()).decode()
        return (
            f"{user}:{{PLAIN.b64}}{secret}:{ident.mail_uid}:{ident.mail_gid}::{home}::"
            f"userdb_quota_rule={rule}\n"
        )

    def _update_userdb(self, lines: dict[str, str]) -> None:
        """The one userdb file of a doveadm_api instance (iterable: ``doveadm user '*'``)."""
        merged: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.userdb_file.read_text().splitlines(keepends=True):
                merged[line.split(":", 1)[0]] = line
        merged.update(lines)
        self._write_auth_file(self.userdb_file, "".join(merged.values()))

    def remove_user(self, user: str) -> None:
        """Take *user* out of the userdb listing (doveadm_api instances; mail stays on disk)."""
        if not self.doveadm_api:
            raise SandboxError("remove_user needs a doveadm_api instance")
        merged = [
            line
            for line in self.userdb_file.read_text().splitlines(keepends=True)
            if line.split(":", 1)[0] != user
        ]
        self._write_auth_file(self.userdb_file, "".join(merged))
        with contextlib.suppress(FileNotFoundError):
            (self.users_dir / user).unlink()
        time.sleep(1.05 - time.time() % 1.0)

    def _write_api_key(self) -> None:
        """A random doveadm HTTP API key, kept in ``doveadm_key_file`` (mode 0600) across restarts."""
        if self.doveadm_key_file.exists():
            self.doveadm_api_key = self.doveadm_key_file.read_text().strip()
            return
        self.doveadm_api_key = secrets.token_urlsafe(24)
        fd = os.open(self.doveadm_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{self.doveadm_api_key}\n".encode())
        finally:
            os.close(fd)

    @property
    def doveadm_url(self) -> str:
        """The doveadm HTTP API endpoint (HTTPS, certificate from ``ca_file``)."""
        return f"https://{self.host}:{self.doveadm_port}/doveadm/v1"

    def _mail_mkdir(self, path: Path) -> None:
        """mkdir -p below home_root; new directories are 0700 and owned by the mail uid."""
        missing: list[Path] = []
        probe = path
        while not probe.exists():
            if probe == self.home_root or self.home_root not in probe.parents:
                raise SandboxError(f"{path} is not below {self.home_root}")
            missing.append(probe)
            probe = probe.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            if self.ident.root:
                os.chown(directory, self.ident.mail_uid, self.ident.mail_gid)

    def _write_auth_file(self, path: Path, content: str) -> None:
        """Atomically replace *path*; bump its mtime so Dovecot notices the change."""
        old_mtime = path.stat().st_mtime if path.exists() else 0.0
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, content.encode())
            if self.ident.root:
                os.fchown(fd, 0, self.ident.internal_gid)
        finally:
            os.close(fd)
        now = time.time()
        if int(now) <= int(old_mtime):
            os.utime(tmp, (old_mtime + 1, old_mtime + 1))
        os.replace(tmp, path)

    def _write_master_user(self) -> None:
        if self.master_file.exists():
            line = self.master_file.read_text().strip()
            user, _, rest = line.partition(":")
            secret = rest.split(":", 1)[0].removeprefix("{PLAIN.b64}")
            if user == self.master_user:
                self.master_password = base64.b64decode(secret).decode()
                return
        self.master_password = secrets.token_urlsafe(18)
        secret = base64.b64encode(self.master_password.encode()).decode()
        self._write_auth_file(self.master_file, f"{self.master_user}:{{PLAIN.b64}}{secret}\n")

    def maildir(self, user: str) -> Path:
        """The user's Maildir root (which is also INBOX)."""
        return self.home_root / user / "Maildir"

    # ------------------------------------------------------------------ doveadm helpers

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <conf> ARGS``; return stdout, raise :class:`DoveadmError`."""
        proc = subprocess.run(
            [DOVEADM_BIN, "-c", str(self.conf_file), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            raise DoveadmError(args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def quota_get(self, user: str) -> dict[str, tuple[int, int | None]]:
        """``{"STORAGE": (used_kib, limit_kib), "MESSAGE": (count, limit)}``; None = unlimited."""
        out = self.doveadm("-f", "tab", "quota", "get", "-u", user)
        result: dict[str, tuple[int, int | None]] = {}
        for line in out.splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) < 4:
                continue
            limit = None if fields[3] in ("-", "") else int(fields[3])
            result[fields[1]] = (int(fields[2]), limit)
        return result

    def kill_user_sessions(self, user: str) -> None:
        """Disconnect all of *user*'s IMAP and POP3 sessions (``doveadm kick``) and return once
        anvil lists none of them: kick only signals the processes, and a command the client
        sends meanwhile (a POP3 QUIT, say) could still be carried out before they go."""
        try:
            self.doveadm("kick", user)
        except DoveadmError as exc:
            # exit 68 (EX_NOUSER): the user had no sessions.
            if exc.returncode != 68:
                raise
        deadline = time.monotonic() + 10
        while any(line.split()[:1] == [user] for line in self.doveadm("who", user).splitlines()):
            if time.monotonic() > deadline:
                raise SandboxError(f"{user}'s sessions still listed 10 s after doveadm kick")
            time.sleep(0.02)

    def folder_path(self, user: str, folder: str) -> Path:
        """Directory of *folder* (``INBOX``, ``Archive/2023``, ...) in the user's Maildir."""
        return Path(self.doveadm("mailbox", "path", "-u", user, folder).strip())

    def deliver_bulk(
        self, user: str, folder: str, messages: Iterable[tuple[bytes, datetime, str]]
    ) -> None:
        """Write messages straight into *folder* (created if missing), then resync and recalc quota.

        Each item is ``(raw RFC 5322 bytes, received date, maildir flags)``; the
        received date becomes the file mtime, i.e. the IMAP INTERNALDATE; naive
        datetimes are taken as UTC. Flags are Maildir letters: ``S`` seen, ``F``
        flagged, ``R`` answered, ``P`` forwarded, ``D`` draft, ``T`` deleted. UIDs
        follow the iteration order. Quota is *not* enforced.
        """
        path = self.folder_path(user, folder)
        if not (path / "cur").is_dir():
            if folder.upper() != "INBOX":
                try:
                    self.doveadm("mailbox", "create", "-s", "-u", user, folder)
                except DoveadmError as exc:
                    if "exists" not in exc.stderr:
                        raise
            for sub in ("cur", "new", "tmp"):
                self._mail_mkdir(path / sub)
        ident = self.ident
        tmp_dir = os.fspath(path / "tmp")
        cur_dir = os.fspath(path / "cur")
        base = int(time.time())
        tag = f"P{os.getpid()}Q{secrets.token_hex(4)}.{self.name}"
        flags_cache: dict[str, str] = {}
        for seq, (data, when, flags) in enumerate(messages):
            info = flags_cache.get(flags)
            if info is None:
                letters = set(flags)
                if not letters <= _MAILDIR_FLAGS:
                    raise ValueError(f"unsupported maildir flags {flags!r} (use D F P R S T)")
                info = flags_cache[flags] = "".join(sorted(letters))
            secs, usecs = divmod(seq, 1_000_000)
            name = f"{base + secs}.M{usecs:06d}{tag}N{seq},S={len(data)},W={_vsize(data)}"
            tmp_path = os.path.join(tmp_dir, name)
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if ident.root:
                    os.fchown(fd, ident.mail_uid, ident.mail_gid)
            finally:
                os.close(fd)
            stamp = _as_timestamp(when)
            os.utime(tmp_path, (stamp, stamp))
            os.rename(tmp_path, os.path.join(cur_dir, f"{name}:2,{info}"))
        self.doveadm("force-resync", "-u", user, folder)
        self.doveadm("quota", "recalc", "-u", user)

    # ------------------------------------------------------------------ internals

    def _check_reachable(self) -> None:
        """As root, every directory up to base_dir must be traversable by other users."""
        if not self.ident.root:
            return
        existing = self.base_dir
        while not existing.exists():
            existing = existing.parent
        for directory in (existing, *existing.parents):
            if not os.stat(directory).st_mode & 0o001:
                raise SandboxError(
                    f"{directory} is not world-traversable, so Dovecot's unprivileged users "
                    f"cannot reach {self.base_dir}; use sandbox.dovecot.make_base_dir()"
                )

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_ready(self, log_offset: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        checks = [
            (self.imap_port, b"* OK"),
            (self.pop3_port, b"+OK"),
            (self.imaps_port, b""),
            (self.pop3s_port, b""),
        ]
        if self.doveadm_api:
            checks.append((self.doveadm_port, b""))
        for port, greeting in checks:
            while True:
                if _probe(self.host, port, greeting):
                    break
                log = self._log_tail(log_offset)
                if "Address already in use" in log:
                    raise _PortRace(log)
                if not self.running:
                    raise SandboxError(f"dovecot exited during start-up:\n{log}")
                if time.monotonic() > deadline:
                    _terminate(self.pid_file, self.conf_file)
                    raise SandboxError(f"dovecot did not answer on port {port}:\n{log}")
                time.sleep(0.02)

    def _make_certificates(self) -> None:
        if all(
            p.exists() for p in (self.ca_file, self.other_ca_file, self.cert_file, self.key_file)
        ):
            return
        cnf = self.ssl_dir / "openssl.cnf"
        cnf.write_text(_OPENSSL_CNF)
        tag = secrets.token_hex(4)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        ca_key = self.ssl_dir / "ca.key"
        other_key = self.ssl_dir / "other-ca.key"
        csr = self.ssl_dir / "server.csr"
        jobs = [
            [OPENSSL_BIN, "req", "-x509", *ec, "-config", str(cnf), "-extensions", "ca_ext",
             "-subj", f"/O=quotawatch sandbox/CN=Sandbox CA {self.name} {tag}", "-days", "3650",
             "-keyout", str(ca_key), "-out", str(self.ca_file)],
            [OPENSSL_BIN, "req", "-x509", *ec, "-config", str(cnf), "-extensions", "ca_ext",
             "-subj", f"/O=quotawatch sandbox/CN=Unrelated CA {self.name} {tag}", "-days", "3650",
             "-keyout", str(other_key), "-out", str(self.other_ca_file)],
            [OPENSSL_BIN, "req", "-new", *ec, "-config", str(cnf),
             "-subj", "/O=quotawatch sandbox/CN=localhost",
             "-keyout", str(self.key_file), "-out", str(csr)],
        ]  # fmt: skip
        procs = [
            subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for cmd in jobs
        ]
        for cmd, proc in zip(jobs, procs, strict=True):
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise SandboxError(f"{' '.join(cmd)} failed: {out.decode(errors='replace')}")
        _run_checked(
            [OPENSSL_BIN, "x509", "-req", "-in", str(csr), "-CA", str(self.ca_file),
             "-CAkey", str(ca_key), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
             "-days", "825", "-extfile", str(cnf), "-extensions", "server_ext",
             "-out", str(self.cert_file)]
        )  # fmt: skip
        for key in (ca_key, other_key, self.key_file):
            key.chmod(0o600)
        csr.unlink()

    def _config(self) -> str:
        ident = self.ident
        hidden = set(self.hide_capabilities)
        imap_plugins = "$mail_plugins" if "QUOTA" in hidden else "$mail_plugins imap_quota"
        capability = ""
        if hidden - {"QUOTA"}:
            # Also used by imap-login, so before login the same list is advertised
            # (plus STARTTLS and AUTH=...), unlike Dovecot's short default banner.
            visible = " ".join(c for c in DEFAULT_IMAP_CAPABILITY if c.upper() not in hidden)
            capability = f"  imap_capability = {visible}\n"
        rootless = ""
        if not ident.root:
            rootless = (
                "service anvil {\n  chroot =\n}\n"
                "service auth-worker {\n  user = $default_internal_user\n}\n"
                "service imap-urlauth-login {\n  chroot =\n}\n"
            )
        mailboxes = "".join(
            f'  mailbox "{folder}" {{\n    special_use = {flag}\n    auto = subscribe\n  }}\n'
            for folder, flag in self.special_folders.items()
        )
        login_chroot = "" if ident.root else "  chroot =\n"
        plugins, virtual = "quota", ""
        if self.virtual_all:
            plugins = "quota virtual"
            virtual = (
                "namespace virtual {\n  prefix = Virtual/\n  separator = /\n"
                f"  location = virtual:{self.base_dir}/virtual:INDEX=~/virtual\n"
                f'  mailbox "{self.all_name}" {{\n    special_use = \\All\n  }}\n}}\n'
            )
        userdb = f"{self.users_dir}/%u"
        doveadm = ""
        if self.doveadm_api:
            # One userdb file: a passwd-file with %u in its path cannot be iterated, and
            # doveadm user '*' / quota get -A (allUsers) need the list of every user.
            userdb = str(self.userdb_file)
            doveadm = (
                f"doveadm_api_key = {self.doveadm_api_key}\n"
                "service doveadm {\n  inet_listener http {\n"
                f"    port = {self.doveadm_port}\n    ssl = yes\n  }}\n}}\n"
            )
        ssl_dh = ""
        if Path("/usr/share/dovecot/dh.pem").exists():
            ssl_dh = "ssl_dh = </usr/share/dovecot/dh.pem\n"
        oauth2_mechanisms, oauth2_passdb = "", ""
        if self.oauth2 is not None:
            oauth2_mechanisms = f" {OAUTH2_MECHANISMS}"
            oauth2_passdb = passdb_block(self.auth_dir / "oauth2.conf.ext")
        return f"""\
# Generated by sandbox/dovecot.py for the quotawatch sandbox {self.name!r}; do not edit.
instance_name = {self.name}-{self.base_dir.name}
protocols = imap pop3
listen = 127.0.0.1
base_dir = {self.run_dir}
state_dir = {self.state_dir}
log_path = {self.log_file}
login_greeting = Dovecot sandbox {self.name} ready.

default_internal_user = {ident.internal_user}
default_login_user = {ident.login_user}
default_internal_group = {ident.internal_group}
first_valid_uid = {ident.mail_uid}
first_valid_gid = {ident.mail_gid}

# Authentication: failures are logged, passwords never.
auth_mechanisms = plain login{oauth2_mechanisms}
auth_master_user_separator = *
auth_verbose = yes
auth_verbose_passwords = no
auth_debug = no
auth_debug_passwords = no
auth_failure_delay = 0
disable_plaintext_auth = no

# The static passdbs authenticate nobody ("noauthenticate": only add fields, then go
# on with the next passdb). Their "nodelay" field makes failed logins answer at once
# and keeps them out of anvil's auth penalty, which would otherwise delay every later
# login from 127.0.0.1 by up to 15 s (login_trusted_networks does not help in 2.3).
passdb {{
  driver = static
  args = noauthenticate=y nodelay=y
  master = yes
}}
passdb {{
  driver = passwd-file
  args = {self.master_file}
  master = yes
  pass = yes
}}
passdb {{
  driver = static
  args = noauthenticate=y nodelay=y
}}
passdb {{
  driver = passwd-file
  args = {self.users_dir}/%u
}}
{oauth2_passdb}userdb {{
  driver = passwd-file
  args = {userdb}
}}
{doveadm}
ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
{ssl_dh}ssl_min_protocol = TLSv1.2

mail_location = maildir:~/Maildir:LAYOUT=fs
mail_plugins = {plugins}
# Throw-away mail: skip fsync() for speed.
mail_fsync = never
mail_max_userip_connections = 200

namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}}}
{virtual}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}

protocol imap {{
  mail_plugins = {imap_plugins}
{capability}}}

protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}

# Login processes in "high-performance" mode (one process, many connections):
# fast connects for parallel tests and benchmarks.
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 256
{login_chroot}}}

service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 1
  client_limit = 256
{login_chroot}}}

service imap {{
  process_limit = 256
}}

service pop3 {{
  process_limit = 256
}}
{rootless}"""


class _PortRace(SandboxError):
    """Another process grabbed one of the chosen ports before Dovecot bound it."""


def _probe(host: str, port: int, greeting: bytes) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            if not greeting:
                return True
            sock.settimeout(5)
            data = sock.recv(200)
            return data.startswith(greeting)
    except OSError:
        return False


def _run_checked(cmd: list[str]) -> None:
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
