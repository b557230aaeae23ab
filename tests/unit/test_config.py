"""Config validation: every problem at once, dotted paths, file names, no secrets in messages."""

from pathlib import Path

import pytest
import yaml

from quotawatch.config import load_config, parse_config
from quotawatch.config.sources import all_accounts, select_accounts
from quotawatch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def account(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "alice",
        "host": "mail.example.org",
        "username": "alice",
        "password_file": "/etc/quotawatch/alice",
    }
    base.update(kw)
    return base


def problems(data: object, path: str = "qw.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, path)
    return info.value.lines()


def test_minimal_config_defaults() -> None:
    config = parse_config({"accounts": [account()]})
    acct = config.accounts[0]
    assert acct.tls == "implicit"
    assert acct.effective_port == 993
    assert config.schedule.concurrency == 16


def test_every_problem_reported_with_dotted_path() -> None:
    lines = problems(
        {
            "accounts": [
                account(),
                account(name="bob", tls="none", bogus=1),
                account(name="carol", tls="starttls", port=993),
            ],
            "rules": {"junk": {"folders": ["\\Junk"], "older_than": "12h"}},
            "nonsense": True,
        }
    )
    assert (
        "qw.yaml: accounts[1].tls: tls: none sends the password unencrypted; set allow_insecure_plaintext: true to permit it"
        in lines
    )
    assert "qw.yaml: accounts[1].bogus: Extra inputs are not permitted" in lines
    assert any(
        line.startswith("qw.yaml: accounts[2].tls: tls: starttls on port 993") for line in lines
    )
    assert any(
        line.startswith("qw.yaml: rules.junk.older_than: older_than must be at least 1d")
        for line in lines
    )
    assert "qw.yaml: nonsense: Extra inputs are not permitted" in lines
    assert len(lines) == 5


def test_implicit_on_plain_port_names_both() -> None:
    (line,) = problems({"accounts": [account(port=143)]})
    assert "implicit" in line and "143" in line


def test_plaintext_allowed_with_opt_in() -> None:
    config = parse_config({"accounts": [account(tls="none", allow_insecure_plaintext=True)]})
    assert config.accounts[0].effective_port == 143


def test_exactly_one_password_source() -> None:
    (line,) = problems({"accounts": [account(password_env="X")]})
    assert "accounts[0]" in line and "exactly one" in line


def test_unknown_rule_and_duplicate_name() -> None:
    lines = problems({"accounts": [account(rules=["nope"]), account()]})
    assert any("accounts[0].rules[0]: unknown rule 'nope'" in line for line in lines)
    assert any("accounts[1].name: duplicate account name 'alice'" in line for line in lines)


def test_rule_checks() -> None:
    lines = problems(
        {
            "rules": {
                "a": {"folders": ["INBOX"], "older_than": "30d"},
                "b": {"folders": ["\\Trash"], "when_above": "80%", "down_to": "90%"},
                "c": {"folders": ["\\Bogus"], "older_than": "30d"},
                "d": {"folders": ["\\Trash"], "older_than": "30d", "action": "archive"},
                "e": {"folders": ["\\Trash"]},
            }
        }
    )
    text = "\n".join(lines)
    assert "rules.a: this rule touches INBOX; set allow_inbox: true" in text
    assert "rules.b: down_to (90%) must be below when_above (80%)" in text
    assert "rules.c: unknown special-use flag" in text
    assert "rules.d: action archive needs archive_dir" in text
    assert "rules.e: a rule needs older_than" in text


def test_secret_values_never_in_errors(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    lines = problems({"accounts": [account(password_file=secret, tls=secret)]})
    assert all(secret not in line for line in lines)


def test_load_config_reports_file_and_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "qw.yaml"
    path.write_text("accounts:\n  - name: a\n    name: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "duplicate key" in str(info.value)
    path.write_text("accounts: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "invalid YAML" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value)


def test_state_dir_relative_to_config_file(tmp_path: Path) -> None:
    path = tmp_path / "qw.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "st"}))
    assert load_config(path).state_dir == tmp_path / "st"


def test_account_sources_expand(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# staff\nalice\nbob  # the other one\n\n")
    path = tmp_path / "qw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "account_sources": [
                    {
                        "usernames_file": "users.txt",
                        "template": {
                            "host": "mail.example.org",
                            "username": "{user}*admin",
                            "password_file": "/etc/quotawatch/admin",
                            "email": "{user}@example.org",
                        },
                    }
                ]
            }
        )
    )
    config = load_config(path)
    accounts = all_accounts(config, str(path))
    assert [(a.name, a.username, a.email) for a in accounts] == [
        ("alice", "alice*admin", "alice@example.org"),
        ("bob", "bob*admin", "bob@example.org"),
    ]
    assert [a.name for a in select_accounts(accounts, ["bob"])] == ["bob"]
    with pytest.raises(ConfigError):
        select_accounts(accounts, ["nobody"])


def test_invalid_email_rejected() -> None:
    (line,) = problems({"accounts": [account(email="not an address\r\nBcc: x@y")]})
    assert line.startswith("qw.yaml: accounts[0].email:")


@pytest.mark.parametrize("example", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(example: Path) -> None:
    load_config(example)
