"""The one verifying TLS client context shared by the IMAP, POP3 and SMTP clients."""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path


@functools.lru_cache(maxsize=64)
def _context(ca_file: str | None, _mtime_ns: int) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context: system store or ``ca_file``, host name checked, TLS 1.2+.

    Contexts are shared (loading the system store costs ~20 ms of CPU) and rebuilt when the
    CA file changes; an SSLContext is safe to use from several threads.
    """
    path = str(ca_file) if ca_file else None
    try:
        mtime = os.stat(path).st_mtime_ns if path else 0
    except OSError:
        mtime = -1  # let ssl report the missing file
    return _context(path, mtime)
