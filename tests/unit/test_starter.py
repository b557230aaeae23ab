"""The starter config of ``config init``: its comments line up whatever the values' lengths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from quotawatch.config.starter import COMMENT_COLUMN, _align, starter_config

_TRAILING = re.compile(r"^(\s*\S.*?\S)(\s+)# [^#]*$")


@pytest.mark.parametrize(
    ("host", "password_file", "ca_file"),
    [
        ("mail.example.org", "me.password", None),
        ("a-very-long-host-name.mail.example.org", "some/long/path/me.password", "/etc/ca.pem"),
    ],
)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_every_trailing_comment_starts_in_one_column(
    host: str, password_file: str, ca_file: str | None, protocol: str
) -> None:
    account = {"name": "me", "protocol": protocol, "host": host, "tls": "implicit",
               "username": "me"}  # fmt: skip
    text = starter_config(account, password_file, ca_file, Path("/etc/quotawatch.yaml"))
    trailing = [m for line in text.splitlines()
                if not line.startswith("#") and (m := _TRAILING.match(line))]  # fmt: skip
    assert len(trailing) >= 10
    for m in trailing:
        value, blanks = m.group(1), m.group(2)
        assert len(value + blanks) == COMMENT_COLUMN or (
            blanks == " " and len(value) >= COMMENT_COLUMN
        ), m.group(0)
    data = yaml.safe_load(text)
    assert data["accounts"][0]["host"] == host
    assert data["accounts"][0]["password_file"] == password_file


def test_a_quoted_value_with_a_hash_inside_is_left_alone() -> None:
    line = '    password_file: "odd  # name"   # one line'
    assert _align(line) == line
    assert _align("    tls: none  # x") == "    tls: none".ljust(COMMENT_COLUMN - 1) + " # x"
