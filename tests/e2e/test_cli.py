"""The CLI as a user runs it: `quotawatch config check`, `python -m quotawatch`, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = "Correct-Horse-Battery-Staple-9"


def quotawatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotawatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


def test_config_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "quotawatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "accounts": [
                    {
                        "name": "alice",
                        "host": "mail.example.org",
                        "username": "alice",
                        "password_env": "X",
                        "tls": "none",
                    },
                    {
                        "name": "bob",
                        "host": "mail.example.org",
                        "username": "bob",
                        "password_env": "X",
                        "tls": "starttls",
                        "port": 993,
                        "colour": "blue",
                    },
                ],
                "rules": {"junk": {"folders": ["\\Junk"], "older_than": "2h"}},
            }
        )
    )
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert (
        f"{path}: accounts[0].tls: tls: none sends the password unencrypted; set allow_insecure_plaintext: true to permit it"
        in lines
    )
    assert f"{path}: accounts[1].colour: Extra inputs are not permitted" in lines
    assert any(
        line.startswith(f"{path}: accounts[1].tls: tls: starttls on port 993") for line in lines
    )
    assert any(
        line.startswith(f"{path}: rules.junk.older_than: older_than must be at least 1d")
        for line in lines
    )
    assert result.stdout == ""


def test_config_check_reads_password_sources_without_showing_them(tmp_path: Path) -> None:
    secret = tmp_path / "alice.pw"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    path = tmp_path / "quotawatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "accounts": [
                    {
                        "name": "alice",
                        "host": "mail.example.org",
                        "username": "alice",
                        "password_file": str(secret),
                    }
                ]
            }
        )
    )
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 2
    assert "0644" in result.stderr and str(secret) in result.stderr
    assert SECRET not in result.stderr + result.stdout
    secret.chmod(0o600)
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK (1 accounts" in result.stdout
    assert SECRET not in result.stderr + result.stdout


def test_example_configs_pass_schema_check() -> None:
    for example in sorted((REPO / "config").glob("*.yaml")):
        result = quotawatch("config", "check", str(example))
        # the examples point at secrets, CA files and folders that do not exist here
        for line in result.stderr.splitlines():
            assert any(k in line for k in ("password", "usernames_file", "ca_file", "state_dir")), (
                line
            )


def test_version_and_help() -> None:
    assert quotawatch("--version").stdout.startswith("quotawatch ")
    result = quotawatch("--help")
    for command in ("check", "plan", "cleanup", "run", "config"):
        assert command in result.stdout


def test_check_fails_when_an_account_source_cannot_be_read(tmp_path: Path) -> None:
    """A doveadm source on a closed port: no accounts to check, but exit 1 and the source named."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the test runs
    key = tmp_path / "doveadm.key"
    key.write_text("k")
    key.chmod(0o600)
    path = tmp_path / "quotawatch.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "account_sources": [{
            "name": "staff",
            "doveadm": {"url": f"https://127.0.0.1:{port}/doveadm/v1", "api_key_file": str(key)},
            "template": {"host": "127.0.0.1", "username": "{user}*admin", "password_env": "X",
                         "quota_source": "doveadm"},
        }],
    }))  # fmt: skip
    for command in (["check"], ["check", "--json"], ["plan"]):
        proc = quotawatch(*command, "--config", str(path))
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert "account source(s) not read: staff" in proc.stderr


def test_config_check_warns_about_a_gmail_archive_rule_and_passes(tmp_path: Path) -> None:
    secret = tmp_path / "alice.pw"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    path = tmp_path / "quotawatch.yaml"
    archive = {"folders": ["Newsletters"], "older_than": "30d", "action": "archive",
               "archive_dir": str(tmp_path / "archive")}  # fmt: skip
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "accounts": [{"name": "alice", "provider": "gmail", "username": "alice@example.com",
                      "password_file": str(secret), "rules": ["news"]}],
        "rules": {"news": archive},
    }))  # fmt: skip
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK (1 accounts, 1 rules)" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}: accounts[0].rules[0]: warning: rule news archives")
    assert "Gmail limits IMAP downloads to 2,500 MB a day" in line
