"""Dovecot's doveadm, the server-side access of large installations: every user, and every user's quota in one call."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from quotawatch.config.fleet import DoveadmAccess
from quotawatch.errors import (
    AuthError,
    ConnectError,
    ProtocolError,
    ServerTimeout,
    TemporaryServerError,
    TLSError,
)
from quotawatch.mail.tls import tls_context
from quotawatch.model import QuotaResource

#: the largest answer read from doveadm (100,000 users' quota is about 30 MB)
MAX_RESPONSE = 512 * 1024 * 1024
#: doveadm exit codes that mean "try again later" (EX_TEMPFAIL)
TEMPORARY_EXIT = {75}
#: the quota of every user is one answer, sent when the last user is done: it may take this
#: long per user if that is longer than ``timeout`` (Dovecot 2.3 on the 2-vCPU test VM: 10,000
#: / 30,000 users in 17 / 59 s, and in 86 / 323 s where it first built their indexes, 11 ms a
#: user; so 100,000 users wait up to 2,000 s, however short the configured timeout)
QUOTA_SECONDS_PER_USER = 0.02

Quotas = dict[str, tuple[QuotaResource, ...]]


class Doveadm:
    """One doveadm endpoint; each call opens its own connection (or process), so threads may share it."""

    def __init__(self, access: DoveadmAccess, api_key: SecretStr | None = None) -> None:
        if access.url is not None and api_key is None:
            raise ValueError("the doveadm HTTP API needs its API key")
        self.access = access
        self._key = api_key
        self.name = f"doveadm {access.label}"

    def __repr__(self) -> str:
        return f"Doveadm({self.access.label!r})"

    # ------------------------------------------------------------------ the two questions
    def users(self) -> list[str]:
        """Every user doveadm lists for the configured user mask, in its order."""
        if self.access.command is not None:
            out = self._run(["user", self.access.user_mask])
            return [line.strip() for line in out.splitlines() if line.strip()]
        payload = self._http("user", {"userMask": [self.access.user_mask]})
        users = payload.get("userList") if isinstance(payload, dict) else None
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ProtocolError(self.name, "user: the answer has no userList")
        return users

    def quotas(self, users: int = 0) -> Quotas:
        """Every user's quota resources (``quota get -A``): STORAGE in bytes, no limit as 0.
        ``users``: how many accounts read it; the wait is ``timeout`` or
        :data:`QUOTA_SECONDS_PER_USER` for each of them, whichever is longer."""
        wait = max(self.access.timeout, users * QUOTA_SECONDS_PER_USER)
        if self.access.command is not None:
            out = self._run(["-f", "tab", "quota", "get", "-A"], wait)
            rows = [line.split("\t") for line in out.splitlines()[1:] if line.strip()]
            return parse_quota_rows(
                [
                    {"username": r[0], "root": r[1], "type": r[2], "value": r[3], "limit": r[4]}
                    for r in rows
                    if len(r) >= 5
                ],
                self.name,
            )
        collected = QuotaRows(self.name)
        payload = self._http("quotaGet", {"allUsers": True}, collected, wait)
        if not isinstance(payload, list):
            raise ProtocolError(self.name, "quotaGet: the answer is not a list of rows")
        if any(row is not None for row in payload):  # a row json did not hand to QuotaRows
            raise ProtocolError(self.name, "quota get: a row lacks username/root/type/value/limit")
        return collected.quotas()

    # ------------------------------------------------------------------ transports
    def _http(
        self,
        command: str,
        parameters: dict[str, Any],
        hook: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The payload of one API command; ``hook`` is json's ``object_hook`` for its objects;
        ``timeout`` (default: the configured one) for connecting and for each read."""
        url = urlsplit(self.access.url or "")
        host, path = url.hostname or "", url.path or "/doveadm/v1"
        assert self._key is not None
        timeout = timeout or self.access.timeout
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, url.port or 443, context=tls_context(self.access.ca_file), timeout=timeout
            )
        else:
            conn = http.client.HTTPConnection(host, url.port or 80, timeout=timeout)
        token = base64.b64encode(self._key.get_secret_value().encode()).decode()
        body = json.dumps([[command, parameters, "qw"]]).encode()
        try:
            conn.request("POST", path, body=body, headers={
                "Authorization": f"X-Dovecot-API {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            })  # fmt: skip
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE + 1)
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(self.name, f"certificate not trusted: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise TLSError(self.name, f"TLS failed: {exc.reason or 'handshake error'}") from None
        except TimeoutError:
            raise ServerTimeout(self.name, f"no answer within {timeout:g}s") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise ConnectError(
                self.name, f"cannot reach the HTTP API: {type(exc).__name__}"
            ) from None
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise AuthError(self.name, f"the API key was refused (HTTP {resp.status})")
        if resp.status != 200:
            raise ProtocolError(self.name, f"{command}: HTTP {resp.status} {resp.reason}")
        if len(data) > MAX_RESPONSE:
            raise ProtocolError(self.name, f"{command}: answer larger than {MAX_RESPONSE} bytes")
        return _payload(data, command, self.name, hook)

    def _run(self, args: Sequence[str], timeout: float | None = None) -> str:
        argv = [*(self.access.command or ()), *args]
        timeout = timeout or self.access.timeout
        try:
            proc = subprocess.run(  # noqa: S603 - the admin's configured doveadm, no shell
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except FileNotFoundError:
            raise ConnectError(self.name, f"{argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise ServerTimeout(self.name, f"no answer within {timeout:g}s") from None
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no message"])[-1][:300]
            error = TemporaryServerError if proc.returncode in TEMPORARY_EXIT else ProtocolError
            raise error(self.name, f"{' '.join(args[-3:])}: exit {proc.returncode}: {detail}")
        return proc.stdout


def _payload(data: bytes, command: str, name: str, hook: Callable[[Any], Any] | None = None) -> Any:
    """The payload of doveadm's ``[["doveadmResponse", payload, tag]]``; errors raise."""
    try:
        answer = json.loads(data, object_hook=hook)
        kind, payload = answer[0][0], answer[0][1]
    except (ValueError, TypeError, IndexError, KeyError):
        raise ProtocolError(name, f"{command}: the answer is not doveadm's JSON") from None
    if kind == "error":
        code = payload.get("exitCode") if isinstance(payload, dict) else None
        kind_of = payload.get("type") if isinstance(payload, dict) else None
        error = TemporaryServerError if code in TEMPORARY_EXIT else ProtocolError
        raise error(name, f"{command} failed: {kind_of or 'error'} (exit code {code})")
    if kind != "doveadmResponse":
        raise ProtocolError(name, f"{command}: unexpected answer {str(kind)[:40]!r}")
    return payload


def _number(text: Any) -> int | None:
    """doveadm's numbers come as strings; ``-`` (or empty) is no limit."""
    value = str(text).strip()
    if value in ("-", ""):
        return None
    return int(value)


def parse_quota_rows(rows: Sequence[Any], name: str = "doveadm") -> Quotas:
    """``quota get`` rows (username, root, type, value, limit) as QuotaResource per user.

    STORAGE comes in KiB and becomes bytes; a limit of ``-`` becomes 0 (no limit), as IMAP's
    absent limit does. Rows of other resource types are kept as counts.
    """
    out = QuotaRows(name)
    for row in rows:
        out.add(row)
    return out.quotas()


class QuotaRows:
    """Collects ``quota get`` rows as ``parse_quota_rows`` describes. As json's ``object_hook``
    it takes each row (an object with a username) as it is decoded and leaves None in its
    place, so the row dicts of 10,000 users never exist together and the quotas kept are not
    scattered among them in memory (RSS after one parse of 10,000 users: +12.7 MiB when parsed
    after decoding, for 2.7 MB kept). Every user's rows share one string per root and type.
    """

    def __init__(self, name: str = "doveadm") -> None:
        self.name = name
        self._out: dict[str, list[QuotaResource]] = {}
        self._names: dict[str, str] = {}

    def __call__(self, obj: dict[str, Any]) -> Any:
        if "username" not in obj:
            return obj
        self.add(obj)
        return None

    def add(self, row: Any) -> None:
        try:
            user, root, kind = str(row["username"]), str(row["root"]), str(row["type"]).upper()
            usage, limit = _number(row["value"]), _number(row["limit"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(
                self.name, "quota get: a row lacks username/root/type/value/limit"
            ) from None
        scale = 1024 if kind == "STORAGE" else 1
        root, kind = self._names.setdefault(root, root), self._names.setdefault(kind, kind)
        self._out.setdefault(user, []).append(
            QuotaResource(root, kind, (usage or 0) * scale, (limit or 0) * scale)
        )

    def quotas(self) -> Quotas:
        return {user: tuple(resources) for user, resources in self._out.items()}
