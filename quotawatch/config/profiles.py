"""Provider profiles of an account (``provider:``): the server names and which quirks apply."""

from __future__ import annotations

from typing import Any, Literal

Profile = Literal["microsoft365", "outlook", "gmail"]

#: (IMAP host, POP3 host) per profile. Sources: Microsoft, "POP, IMAP, and SMTP settings for
#: Outlook.com" (support.microsoft.com); Google, "Read Gmail messages on other email clients
#: using POP" and "...using IMAP" (support.google.com/mail/answer/7126229, /7104828)
HOSTS: dict[str, tuple[str, str]] = {
    "microsoft365": ("outlook.office365.com", "outlook.office365.com"),
    "outlook": ("outlook.office365.com", "outlook.office365.com"),
    "gmail": ("imap.gmail.com", "pop.gmail.com"),
}
#: profiles whose IMAP server offers no QUOTA, no STATUS=SIZE and no SPECIAL-USE (Exchange Online)
EXCHANGE = frozenset({"microsoft365", "outlook"})


def fill_defaults(data: Any) -> Any:
    """Raw account data with ``host`` filled in from ``provider`` when it is not given."""
    if not isinstance(data, dict) or data.get("host") or data.get("provider") not in HOSTS:
        return data
    imap, pop3 = HOSTS[data["provider"]]
    return {**data, "host": pop3 if data.get("protocol") == "pop3" else imap}


#: bytes Gmail lets one account download over IMAP a day (Google Workspace Admin Help, "Gmail
#: bandwidth limits", support.google.com/a/answer/1071518: "Download via IMAP: 2500 MB per day")
GMAIL_IMAP_DOWNLOAD_PER_DAY = 2_500 * 1000**2
GMAIL_DOWNLOAD_LIMIT = "Gmail limits IMAP downloads to 2,500 MB a day"

#: folders where a Gmail delete really removes the message (lower case): Trash and Spam; a
#: delete elsewhere only removes a label (see quotawatch.mail.imap.gmail)
GMAIL_BINS = frozenset(
    {"\\trash", "\\junk"}
    | {
        f"[{s}]/{f}"
        for s in ("gmail", "google mail")
        for f in ("trash", "spam", "bin", "papierkorb")
    }
)
