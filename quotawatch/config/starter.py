"""The commented starter config ``quotawatch config init`` writes for one mailbox."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

PLACEHOLDER = {
    "name": "me",
    "protocol": "imap",
    "host": "mail.example.org",
    "tls": "implicit",
    "username": "me",
}


#: the column (from 0) where comments after a value start (one blank after a longer value)
COMMENT_COLUMN = 37
_COMMENTED = re.compile(r"^(\s*\S.*?)\s{2,}(# .*)$")


def _align(text: str) -> str:
    """Every trailing comment at :data:`COMMENT_COLUMN`, whatever the length of the value
    before it (a host name or file name of any length); a line whose value part holds an
    odd number of quotes (a quoted value with blanks and "#" in it) is left as it is."""
    out = []
    for line in text.split("\n"):
        m = _COMMENTED.match(line)
        if m is not None and m.group(1).count('"') % 2 == 0:
            value, comment = m.groups()
            line = value.ljust(COMMENT_COLUMN - 1) + " " + comment
        out.append(line)
    return "\n".join(out)


def _q(value: object) -> str:
    """A YAML scalar: JSON strings are valid YAML and quote anything odd."""
    return json.dumps(value, ensure_ascii=False)


def starter_config(
    account: dict[str, Any], password_file: str, ca_file: str | None, path: Path
) -> str:
    """The text of the starter config for ``account`` (fields as parse_mailbox_url gives them)."""
    pop3 = account["protocol"] == "pop3"
    port = f"port: {account['port']}" if "port" in account else "# port: (default by tls)"
    ca = f"ca_file: {_q(ca_file)}" if ca_file else "# ca_file: /etc/ssl/my-ca.pem"
    if pop3:
        extra = (
            "    quota_from_imap: true          # POP3 cannot tell the quota: read it over IMAP,\n"
            "    # quota: 1GB                   #   or state the mailbox size instead\n"
            "    rules: []                      # POP3 has only INBOX; see README, POP3 accounts\n"
        )
    else:
        extra = "    rules: [trash-30d, junk-14d]\n"
    return _align(f"""\
# quotawatch starter config, written by `quotawatch config init`.
# Next:  quotawatch config check {path}
#        quotawatch check --config {path}     quota and folders, largest first
#        quotawatch plan --config {path}      what the rules would remove; changes nothing
# Every key is explained in README.md, "Configuration reference". Relative paths are taken
# from this file's folder.

state_dir: ./state                   # SQLite state and the audit log (audit.jsonl)

accounts:
  - name: {_q(account["name"])}
    protocol: {account["protocol"]}                   # imap | pop3
    host: {_q(account["host"])}
    tls: {account["tls"]}                # implicit | starttls (never plaintext from here)
    {port}
    username: {_q(account["username"])}
    password_file: {_q(password_file)}   # one line, mode 0600 (chmod 600 FILE)
    {ca}   # only for a private CA; else the system store
    # email: me@example.org          # where warning mails go (warnings are off below)
{extra}
rules:
  trash-30d:                         # messages that lay in the Trash for 30 days
    folders: ["\\\\Trash"]              # the folder the server marks as Trash (special-use)
    older_than: 30d
    age: saved                       # time in this folder
    max_delete_fraction: 100%        # emptying old trash is expected
  junk-14d:                          # spam received more than 14 days ago
    folders: ["\\\\Junk"]
    older_than: 14d
    age: received
    max_delete_fraction: 100%

schedule:
  interval: 15m                      # how often `quotawatch run` checks (at least 1m)
  cleanup: false                     # monitor only; set true once `plan` shows what you expect
                                     # (`quotawatch cleanup --config FILE --apply` runs it by hand)

# Warning mails are off. To send them, add an smtp: and a warnings: section, e.g.
# smtp:
#   host: smtp.example.org
#   username: quotawatch
#   password_file: smtp.password
#   from: "Mail service <postmaster@example.org>"
# warnings:
#   thresholds: [80%, 90%, 95%]
""")


def write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600; FileExistsError if it exists (it is never overwritten)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # whatever the umask
