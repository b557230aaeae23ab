"""A private, throw-away OpenLDAP ``slapd`` for the tests of the ``ldap`` account source.

Everything lives below one ``base_dir``: the generated ``slapd.conf`` (read with ``-f``, nothing
in ``/etc/ldap`` is used or changed), the mdb database (``data/``), the root password file and
``slapd.log`` (slapd's ``stats`` log: every connection, StartTLS, BIND and SEARCH). slapd runs in
the foreground as a child of the test process, on 127.0.0.1 only:

* ``url``        -- ``ldap://127.0.0.1:PORT``, StartTLS offered;
* ``ldaps_url``  -- ``ldaps://127.0.0.1:PORT2``;
* ``mismatch_url`` / ``mismatch_starttls_url`` -- ``ldaps://127.0.0.2:PORT2`` and
  ``ldap://127.0.0.2:PORT``: the same server under an address its certificate does not name
  (the host name check must refuse it).

The certificate comes from the sandbox CA a Dovecot kit makes (:meth:`Slapd.for_dovecot`), so
``dovecot.ca_file`` verifies it and ``dovecot.other_ca_file`` does not. The suffix is
``dc=example,dc=org``; users are ``uid=NAME,ou=people,dc=example,dc=org`` (inetOrgPerson, with
``mail`` when given). Binding: ``root_dn`` / ``root_password`` (exempt from limits), ``reader_dn``
/ ``reader_password`` (an ordinary service account: reads everything, within the limits) and
``capped_dn`` (same password; with ``size_limit`` its paged searches are cut there too).
Anonymous binds read nothing.

``size_limit`` sets ``sizelimit size.soft=N size.hard=N size.prtotal=unlimited``: a search
without paging stops after N entries (sizeLimitExceeded), a paged one may page past N, as on
Active Directory. Run as root, slapd stays root (no ``-u``): it reads the CA's key files
directly and nothing else needs privileges.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from sandbox.dovecot import Dovecot, SandboxError

SLAPD_BIN = shutil.which("slapd") or "/usr/sbin/slapd"
LDAPADD_BIN = shutil.which("ldapadd") or "/usr/bin/ldapadd"
LDAPDELETE_BIN = shutil.which("ldapdelete") or "/usr/bin/ldapdelete"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
_START_TIMEOUT = 20.0


def make_base_dir(prefix: str = "qw-slapd-") -> Path:
    """A fresh directory in the system temp dir for one slapd (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ldif_value(value: str) -> str:
    """``attr: value``'s value part, base64 (``attr:: ...``) when LDIF needs it."""
    import base64

    if value and value.isascii() and value.isprintable() and value[0] not in " :<":
        return f" {value}"
    return f": {base64.b64encode(value.encode()).decode()}"


class Slapd:
    """One sandbox slapd below ``base_dir``; see the module docstring. A context manager."""

    host = "127.0.0.1"
    suffix = "dc=example,dc=org"
    people = "ou=people,dc=example,dc=org"
    root_dn = "cn=admin,dc=example,dc=org"
    reader_dn = "cn=reader,dc=example,dc=org"
    capped_dn = "cn=capped,dc=example,dc=org"

    def __init__(
        self,
        base_dir: Path,
        *,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        size_limit: int | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.size_limit = size_limit
        self.conf_file = self.base_dir / "slapd.conf"
        self.log_file = self.base_dir / "slapd.log"
        self.data_dir = self.base_dir / "data"
        self.root_password_file = self.base_dir / "root.pw"
        self.root_password = secrets.token_urlsafe(16)
        self.reader_password = secrets.token_urlsafe(16)
        self.ldap_port = 0
        self.ldaps_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._loaded = False

    @classmethod
    def for_dovecot(cls, base_dir: Path, dovecot: Dovecot, size_limit: int | None = None) -> Slapd:
        """A slapd serving the certificate of ``dovecot``'s sandbox CA (``dovecot.ca_file``)."""
        return cls(base_dir, ca_file=dovecot.ca_file, cert_file=dovecot.cert_file,
                   key_file=dovecot.key_file, size_limit=size_limit)  # fmt: skip

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    def __repr__(self) -> str:
        return f"Slapd({str(self.base_dir)!r}, ldap={self.ldap_port}, ldaps={self.ldaps_port})"

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def mismatch_url(self) -> str:
        return f"ldaps://127.0.0.2:{self.ldaps_port}"

    @property
    def mismatch_starttls_url(self) -> str:
        return f"ldap://127.0.0.2:{self.ldap_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Slapd:
        """Write the config, start slapd (on the ports of an earlier start, if any), wait until
        both ports answer, and on the first start load the base entries."""
        if self.running:
            raise SandboxError(f"slapd from {self.base_dir} is already running")
        if not Path(SLAPD_BIN).exists():
            raise SandboxError(f"slapd is not installed ({SLAPD_BIN}); apt-get install slapd")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.root_password_file.write_text(self.root_password)
        self.root_password_file.chmod(0o600)
        if not self.ldap_port:
            self.ldap_port, self.ldaps_port = _free_port(), _free_port()
        self.conf_file.write_text(self._config())
        self.conf_file.chmod(0o600)  # it holds the root password
        listen = " ".join(
            f"{u}/"
            for u in (self.url, self.ldaps_url, self.mismatch_url, self.mismatch_starttls_url)
        )
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [SLAPD_BIN, "-f", str(self.conf_file), "-h", listen, "-d", "stats"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self._wait_ready()
        if not self._loaded:
            self._load_base()
            self._loaded = True
        return self

    def stop(self) -> None:
        """Terminate slapd and wait for it (SIGKILL after 10 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        for port in (self.ldap_port, self.ldaps_port):
            while True:
                if not self.running:
                    raise SandboxError(f"slapd exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(OSError), socket.create_connection((self.host, port), 1):
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise SandboxError(f"slapd did not answer on {port}:\n{self.log_tail()}")
                time.sleep(0.02)

    def log_tail(self, size: int = 4000) -> str:
        return self.log_text()[-size:]

    def log_text(self) -> str:
        """slapd's stats log so far (connections, StartTLS, BIND, SEARCH, RESULT)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ entries
    def add_users(self, users: Iterable[tuple[str, str | None]]) -> None:
        """Add ``(uid, mail or None)`` users below ``people`` in one ldapadd."""
        blocks = []
        for uid, mail in users:
            lines = [f"dn: uid={uid},{self.people}", "objectClass: inetOrgPerson",
                     f"uid:{_ldif_value(uid)}", f"cn:{_ldif_value(uid)}", "sn: Sandbox"]  # fmt: skip
            if mail is not None:
                lines.append(f"mail:{_ldif_value(mail)}")
            blocks.append("\n".join(lines))
        self.add_ldif("\n\n".join(blocks))

    def add_ldif(self, ldif: str) -> None:
        """Add the entries of an LDIF text as the root DN."""
        self._tool([LDAPADD_BIN], ldif + "\n")

    def remove_user(self, uid: str) -> None:
        self._tool([LDAPDELETE_BIN, f"uid={uid},{self.people}"], "")

    def _tool(self, argv: list[str], stdin: str) -> None:
        cmd = [*argv, "-x", "-H", self.url, "-D", self.root_dn, "-y", str(self.root_password_file)]
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "LDAPNOINIT": "1"},
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxError(f"{' '.join(argv[:1])} failed ({done.returncode}): {done.stderr}")

    def _load_base(self) -> None:
        accounts = "\n\n".join(
            f"dn: {dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: {dn.split(',')[0][3:]}\nuserPassword: {self.reader_password}"
            for dn in (self.reader_dn, self.capped_dn)
        )
        self.add_ldif(
            f"dn: {self.suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"o: quotawatch sandbox\ndc: example\n\n"
            f"dn: {self.people}\nobjectClass: organizationalUnit\nou: people\n\n{accounts}"
        )

    def _config(self) -> str:
        schemas = "\n".join(
            f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson")
        )
        limits = ""
        if self.size_limit is not None:
            n = self.size_limit
            limits = f"sizelimit size.soft={n} size.hard={n} size.prtotal=unlimited\n"
        capped = ""
        if self.size_limit is not None:
            n = self.size_limit
            capped = (
                f'limits dn.exact="{self.capped_dn}" size.soft={n} size.hard={n} size.prtotal={n}\n'
            )
        return f"""\
{schemas}
pidfile {self.base_dir / "slapd.pid"}
argsfile {self.base_dir / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {self.cert_file}
TLSCertificateKeyFile {self.key_file}
{limits}
database mdb
maxsize 268435456
suffix "{self.suffix}"
rootdn "{self.root_dn}"
rootpw {self.root_password}
directory {self.data_dir}
{capped}
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""
