"""Microsoft Graph's mailbox usage report as the test kit's OAuth2 provider serves it (``/graph/...``)."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.oauth_server import OAuthServer


def answer(
    provider: OAuthServer, path: str, authorization: str
) -> tuple[int, dict[str, str], bytes]:
    """Microsoft Graph's getMailboxUsageDetail: a redirect to a CSV download, as Graph does."""
    token = authorization.removeprefix("Bearer ")
    with provider._lock:
        issued = provider.tokens.get(token)
    ok = (
        issued is not None and not issued.revoked and issued.expires_at > time.time()
        and "graph.microsoft.com" in issued.scope and issued.client_id not in provider.graph_forbidden
    )  # fmt: skip
    provider.graph_requests.append((path, ok))
    if path.startswith("/graph/download/"):
        rows = [
            "Report Refresh Date,User Principal Name,Display Name,Is Deleted,Storage Used "
            "(Byte),Issue Warning Quota (Byte),Prohibit Send Quota (Byte),Prohibit "
            "Send/Receive Quota (Byte),Report Period"
        ]
        for user, (used, limit) in sorted(provider.mailbox_usage.items()):
            rows.append(f"2026-11-29,{user},{user},False,{used},{limit * 9 // 10},"
                        f"{limit * 95 // 100},{limit},7")  # fmt: skip
        body = ("\ufeff" + "\r\n".join(rows) + "\r\n").encode()
        return 200, {"Content-Type": "application/octet-stream"}, body
    if "getMailboxUsageDetail" not in path:
        return 404, {}, b""
    if not ok:
        return 403, {"Content-Type": "application/json"}, b'{"error": {"code": "Forbidden"}}'
    where = f"{provider.graph_url}/download/{secrets.token_hex(8)}.csv"
    return 302, {"Location": where}, b""
