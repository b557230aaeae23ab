"""The one verifying TLS client context shared by the IMAP, POP3 and SMTP clients."""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

from quotawatch.errors import CaFileError


@functools.lru_cache(maxsize=64)
def _context(ca_file: str | None, _mtime_ns: int) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError:  # before OSError, its base class
        raise CaFileError(str(ca_file), "holds no PEM CA certificate") from None
    except OSError as exc:
        raise CaFileError(str(ca_file), f"cannot read: {exc.strerror or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context: system store or ``ca_file``, host name checked, TLS 1.2+.

    Contexts are shared (loading the system store costs ~20 ms of CPU) and rebuilt when the
    CA file changes; an SSLContext is safe to use from several threads. A ``ca_file`` that
    cannot be used raises CaFileError (a config error naming the file).
    """
    path = str(ca_file) if ca_file else None
    try:
        mtime = os.stat(path).st_mtime_ns if path else 0
    except OSError:
        mtime = -1  # _context reports the missing file
    return _context(path, mtime)
