"""Mailbox quota and usage from Microsoft Graph's mailbox usage report: one request for a whole tenant.

Exchange Online tells nothing about quotas over IMAP. With ``quota_from_graph: true`` (and the
app granted ``Reports.Read.All``) quotawatch reads ``getMailboxUsageDetail(period='D7')`` once
per tenant and cycle (cached for :data:`REPORT_TTL` seconds) and takes each mailbox's "Storage
Used (Byte)" and "Prohibit Send/Receive Quota (Byte)". Source: Microsoft Graph reference,
"reportRoot: getMailboxUsageDetail". The report lags by up to two days, and a tenant that
conceals user names in reports lists hashes instead: then no mailbox is found, and ``check``
says so.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from quotawatch.config import Account
from quotawatch.config.oauth2 import OAuth2
from quotawatch.errors import ConnectError, MailboxError, ProtocolError
from quotawatch.mail.oauth2.providers import need, network_errors
from quotawatch.mail.oauth2.tokens import TokenBroker
from quotawatch.model import QuotaResource

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
REPORT = "/v1.0/reports/getMailboxUsageDetail(period='D7')"
#: seconds a tenant's report is reused (about one daemon cycle)
REPORT_TTL = 600.0
USED, LIMIT, USER = (
    "Storage Used (Byte)",
    "Prohibit Send/Receive Quota (Byte)",
    "User Principal Name",
)


@dataclass(frozen=True)
class Usage:
    """One mailbox's line of the report."""

    used: int
    limit: int
    refreshed: str  # the report's "Report Refresh Date"


class UsageReports:
    """Per-tenant reports, fetched with the app's Graph token and kept for ``ttl`` seconds."""

    def __init__(
        self,
        tokens: TokenBroker,
        *,
        ttl: float = REPORT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens, self.ttl, self.clock = tokens, ttl, clock
        self._lock = threading.Lock()
        self._reports: dict[
            tuple[str, str, str], tuple[float, dict[str, Usage] | MailboxError]
        ] = {}

    def quota(self, account: Account) -> tuple[tuple[QuotaResource, ...], tuple[str, ...]]:
        """The account's quota resource from its tenant's report, and a note saying so."""
        settings = account.oauth2
        assert settings is not None
        report = self._report(settings, account.name)
        found = report.get(account.username.casefold())
        if found is None:
            return (), (
                "Microsoft Graph's mailbox usage report has no line for "
                f"{account.username} (new mailbox, or user names concealed in reports)",
            )
        note = (
            f"quota and usage from Microsoft Graph's mailbox usage report of {found.refreshed} "
            "(it lags by up to two days)"
        )
        return (QuotaResource("graph", "STORAGE", found.used, found.limit),), (note,)

    def _report(self, settings: OAuth2, label: str) -> dict[str, Usage]:
        key = (settings.effective_authority, settings.client_id, settings.graph_url)
        with self._lock:  # one request per tenant, however many accounts ask at once
            cached = self._reports.get(key)
            if cached is not None and self.clock() - cached[0] < self.ttl:
                if isinstance(cached[1], MailboxError):  # a failure is not retried per account
                    raise type(cached[1])(label, cached[1].detail)
                return cached[1]
            try:
                report: dict[str, Usage] | MailboxError = self._fetch(settings, label)
            except MailboxError as exc:
                report = exc
            self._reports[key] = (self.clock(), report)
            if isinstance(report, MailboxError):
                raise report
            return report

    def _fetch(self, settings: OAuth2, label: str) -> dict[str, Usage]:
        requests = need("requests", "microsoft")
        graph = settings.model_copy(update={"scopes": [GRAPH_SCOPE]})
        token = self.tokens.access_token(graph, "", label)
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        url = settings.graph_url.rstrip("/") + REPORT
        try:
            answer = requests.get(url, headers=headers, timeout=settings.timeout)
        except network_errors() as exc:
            raise ConnectError(
                label, f"Microsoft Graph unreachable: {type(exc).__name__}"
            ) from None
        if answer.status_code != 200:
            raise ProtocolError(
                label,
                f"Microsoft Graph refused the mailbox usage report (HTTP {answer.status_code}); "
                "the app needs the application permission Reports.Read.All",
            )
        return parse_report(answer.content.decode("utf-8-sig", "replace"))


def reports_for(tokens: TokenBroker) -> UsageReports:
    """The broker's UsageReports (one per daemon runtime or CLI run)."""
    found = tokens.attachments.setdefault("graph_reports", UsageReports(tokens))
    assert isinstance(found, UsageReports)
    return found


def parse_report(text: str) -> dict[str, Usage]:
    """User principal name (case-folded) -> usage, from the report's CSV."""
    out: dict[str, Usage] = {}
    for row in csv.DictReader(io.StringIO(text)):
        user, used, limit = row.get(USER), row.get(USED), row.get(LIMIT)
        if not user or not used or not (used.isdigit() and (limit or "").isdigit()):
            continue
        out[user.casefold()] = Usage(int(used), int(limit or 0), row.get("Report Refresh Date", ""))
    return out
