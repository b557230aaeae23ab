"""The one verifying TLS client context shared by the IMAP, POP3 and SMTP clients."""

from __future__ import annotations

import ssl
from pathlib import Path


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context: system store or ``ca_file``, host name checked, TLS 1.2+."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
