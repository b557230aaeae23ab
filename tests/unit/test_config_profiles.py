"""Provider profiles in the config: host filled in, overrides win, quota allowed for Exchange over IMAP."""

from __future__ import annotations

import pytest

from quotawatch.config import parse_config
from quotawatch.errors import ConfigError


def acct(**kw: object) -> dict[str, object]:
    return {"name": "a", "username": "a@example.com", "password_env": "X", **kw}


@pytest.mark.parametrize(
    ("provider", "protocol", "host"),
    [("microsoft365", "imap", "outlook.office365.com"), ("outlook", "pop3", "outlook.office365.com"),
     ("gmail", "imap", "imap.gmail.com"), ("gmail", "pop3", "pop.gmail.com")],
)  # fmt: skip
def test_profile_fills_in_the_host(provider: str, protocol: str, host: str) -> None:
    extra = {"quota": "1GB"} if protocol == "pop3" else {}
    (account,) = parse_config(
        {"accounts": [acct(provider=provider, protocol=protocol, **extra)]}
    ).accounts
    assert account.host == host
    assert account.effective_port == (993 if protocol == "imap" else 995)


def test_explicit_host_wins_and_templates_take_the_profile() -> None:
    config = parse_config({
        "accounts": [acct(provider="microsoft365", host="127.0.0.1", quota="50GB")],
        "account_sources": [{"usernames_file": "/u", "template": {"provider": "gmail", "username": "{user}",
                                                                   "password_env": "X"}}],
    })  # fmt: skip
    assert config.accounts[0].host == "127.0.0.1"
    assert config.accounts[0].quota == 50 * 1000**3
    assert config.account_sources[0].template.host == "imap.gmail.com"


def test_quota_over_imap_only_with_an_exchange_profile() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"accounts": [acct(provider="gmail", quota="1GB")]}, "qw.yaml")
    assert info.value.lines() == ["qw.yaml: accounts[0]: quota is for POP3 accounts only"]


def test_copyuid_of_a_move() -> None:
    from quotawatch.mail.imap.gmail import parse_copyuid

    assert parse_copyuid([b"[COPYUID 1714 3:5,9 17:20] Moved UIDs.", "Move completed."]) == (
        1714,
        "17:20",
    )
    assert parse_copyuid(["OK [COPYUID 7 1 2] done"]) == (7, "2")  # in the tagged answer
    assert parse_copyuid([b"Moved UIDs.", "Move completed."]) is None


def test_quota_from_graph_needs_microsoft_app_only() -> None:
    app = {"provider": "microsoft", "client_id": "app", "tenant": "t", "client_secret_env": "S"}
    ok = acct(provider="microsoft365", auth="oauth2", oauth2=app, quota_from_graph=True)
    del ok["password_env"]
    assert parse_config({"accounts": [ok]}).accounts[0].quota_from_graph
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"accounts": [acct(provider="microsoft365", quota_from_graph=True)]}, "qw.yaml"
        )
    assert info.value.lines() == [
        "qw.yaml: accounts[0]: quota_from_graph needs auth: oauth2 with provider microsoft, flow app-only"
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"accounts": [ok | {"quota": "50GB"}]}, "qw.yaml")
    assert info.value.lines() == [
        "qw.yaml: accounts[0]: set one of quota, quota_from_imap, quota_from_graph"
    ]


def test_readme_oauth2_examples_validate() -> None:
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    blocks = [b for b in found if "auth: oauth2" in b and "warnings:" not in b]  # not abridged ones
    assert len(blocks) >= 3
    for block in blocks:
        parse_config(yaml.safe_load(block), "README.md")


ARCHIVE = {
    "folders": ["Newsletters"],
    "older_than": "30d",
    "action": "archive",
    "archive_dir": "/a",
}


def test_gmail_archive_rules_warn_about_the_download_limit() -> None:
    """An archive rule on a gmail account or template is allowed, with a warning naming it."""
    from quotawatch.config import config_warnings

    config = parse_config({
        "accounts": [acct(provider="gmail", rules=["keep", "news"]),
                     acct(name="b", host="mail.example.org", rules=["news"]),
                     acct(name="c", provider="gmail", rules=["trash"])],
        "account_sources": [{"usernames_file": "/u", "template": {"provider": "gmail", "username": "{user}",
                                                                   "password_env": "X", "rules": ["news"]}}],
        "rules": {"news": ARCHIVE, "keep": {**ARCHIVE, "folders": ["Keep"]},
                  "trash": {"folders": ["\\Trash"], "older_than": "30d"}},
    })  # fmt: skip
    warnings = config_warnings(config)
    assert [loc for loc, _ in warnings] == [
        "accounts[0].rules[0]", "accounts[0].rules[1]", "account_sources[0].template.rules[0]"
    ]  # fmt: skip
    assert "Gmail limits IMAP downloads to 2,500 MB a day" in warnings[1][1]
    assert "rule news archives" in warnings[1][1]


def test_a_gmail_account_plans_with_the_download_limit() -> None:
    from quotawatch.config.profiles import GMAIL_IMAP_DOWNLOAD_PER_DAY
    from quotawatch.retention.caps import Limits

    config = parse_config({"accounts": [acct(provider="gmail"), acct(name="b", host="h")]})
    gmail, other = config.accounts
    assert Limits.of(gmail).download_per_day == GMAIL_IMAP_DOWNLOAD_PER_DAY == 2_500_000_000
    assert Limits.of(other).download_per_day is None
