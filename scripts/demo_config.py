"""Write the demo config for the sandbox started by ``python -m sandbox demo-up DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def demo_config(directory: Path) -> dict[str, object]:
    info = json.loads((directory / "sandbox.json").read_text())
    users = info["users"]

    def imap(name: str, **extra: object) -> dict[str, object]:
        account: dict[str, object] = {
            "name": name,
            "protocol": "imap",
            "host": info["host"],
            "port": info["imaps_port"],
            "tls": "implicit",
            "ca_file": info["ca_file"],
            "username": name,
            "password_file": users[name]["password_file"],
            "email": f"{name}@example.org",
        }
        account.update(extra)
        return account

    accounts = [
        imap("alice", rules=["trash-30d", "junk-14d", "make-room"]),
        imap(
            "carol",
            port=info["imap_port"],
            tls="starttls",
            username=f"carol*{info['master_user']}",
            password_file=info["master_password_file"],
            rules=["trash-30d", "junk-14d", "make-room"],
        ),
        {
            "name": "bob",
            "protocol": "pop3",
            "host": info["host"],
            "port": info["pop3s_port"],
            "tls": "implicit",
            "ca_file": info["ca_file"],
            "username": "bob",
            "password_file": users["bob"]["password_file"],
            "email": "bob@example.org",
            "quota_from_imap": True,
            "imap_port": info["imaps_port"],
            "rules": ["pop-60d"],
            # demo only: no mail client ever fetched the sample mail, so there is nothing to wait
            # for; in real use keep the default 7d (a new installation deletes nothing that long)
            "min_on_server": "0s",
        },
    ]
    return {
        "state_dir": str(directory / "state"),
        "accounts": accounts,
        "rules": {
            # removing everything old from Trash and Junk is expected: lift the 50% per-folder cap
            # A real config would use age: saved (time in Trash). Dovecot's Maildir SAVEDATE is
            # the file's ctime, which the demo's bulk loader cannot set back: every sample message
            # was "saved" today, and an age: saved rule would find nothing old enough (`plan`
            # then says so). The demo ages Trash by arrival instead (README: Known limitations).
            "trash-30d": {
                "folders": ["\\Trash"],
                "older_than": "30d",
                "age": "received",
                "max_delete_fraction": "100%",
            },
            "junk-14d": {
                "folders": ["\\Junk"],
                "older_than": "14d",
                "age": "received",
                "max_delete_fraction": "100%",
            },
            "make-room": {
                "when_above": "90%",
                "down_to": "80%",
                "folders": ["\\Junk", "\\Trash", "Archive/*", "INBOX"],
                "allow_inbox": True,
                "max_delete_fraction": "100%",  # bounded by down_to instead
                "order": "oldest",
                "age": "received",  # the demo's mail was all filed today: age by arrival
                "action": "archive",
                "archive_dir": str(directory / "archive" / "{account}"),
            },
            "pop-60d": {
                "folders": ["INBOX"],
                "older_than": "60d",
                "age": "sent",  # the Date header: first-seen times (age: saved) start today
                # keep_newer_than counts from arrival, for POP3 the first sight (today): demo only
                "keep_newer_than": "0s",
                "max_delete_fraction": "100%",  # archived (kept locally), not lost
                "action": "archive",
                "archive_dir": str(directory / "archive" / "{account}"),
                "allow_inbox": True,
            },
        },
        "schedule": {"interval": "5m", "jitter": "10s", "concurrency": 4, "cleanup": False},
        "metrics": {"listen": "127.0.0.1:9947"},
        **smtp_config(directory),
    }


def smtp_config(directory: Path) -> dict[str, object]:
    """smtp and warnings sections for the demo's SMTP sink, when scripts/demo started one."""
    sink = directory / "smtp"
    if not (sink / "port").exists():
        return {}
    return {
        "smtp": {
            "host": "127.0.0.1",
            "port": int((sink / "port").read_text()),
            "tls": "starttls",
            "ca_file": str(sink / "ca.pem"),
            "username": "quotawatch",
            "password_file": str(directory / "secrets" / "smtp"),
            "from": "Mail service <postmaster@example.org>",
        },
        "warnings": {
            "thresholds": ["80%", "90%", "95%"],
            "rearm_below": "75%",
            "remind_every": "7d",
            "language": "en",
        },
    }


if __name__ == "__main__":
    target = Path(sys.argv[1]).absolute()
    print(yaml.safe_dump(demo_config(target), sort_keys=False, allow_unicode=True), end="")
