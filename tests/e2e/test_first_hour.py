"""The first hour without a server: config check catches what it can, the CLI explains itself,
config init writes a config that passes the check (all as subprocesses)."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import secret_file

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["check", "plan", "cleanup", "run", "warn", "config", "config check", "config init"]


def quotawatch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotawatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def account(tmp_path: Path, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "alice",
        "host": "127.0.0.1",
        "port": 9,  # never contacted by these tests
        "username": "alice",
        "password_file": str(secret_file(tmp_path / "secrets", "alice", "pw-alice-1")),
        "connect_timeout": 2,
    }
    data.update(extra)
    return data


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "quotawatch.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_config_check_catches_everything_knowable_without_a_server(tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    metrics_pw = tmp_path / "metrics.pw"
    metrics_pw.write_text("scrape-secret")
    metrics_pw.chmod(0o644)
    path = write(
        tmp_path,
        {
            "state_dir": str(blocker / "state"),
            "accounts": [
                account(tmp_path, ca_file=str(tmp_path / "missing-ca.pem")),
                account(tmp_path, name="bob", ca_file=str(not_pem), rules=["trash"]),
            ],
            "account_sources": [
                {
                    "usernames_file": str(tmp_path / "no-users.txt"),
                    "template": {
                        "host": "h.example.org",
                        "username": "{user}",
                        "password_env": "X",
                    },
                }
            ],
            "rules": {
                "trash": {"folders": ["Trash\r\nX"], "older_than": "30d"},
                "zero": {"folders": ["\\Junk"], "older_than": "0d"},
            },
            "schedule": {"interval": "0m"},
            "metrics": {
                "listen": "0.0.0.0:9947",
                "basic_auth_username": "prometheus",
                "basic_auth_password_file": str(metrics_pw),
            },
        },
    )
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    # schema problems come first and alone (the file cannot be used); each names its field
    assert any(
        line.startswith(f"{path}: rules.trash.folders[0]: folder name 'Trash\\r\\nX' contains")
        for line in lines
    ), lines
    assert f"{path}: rules.zero.older_than: older_than must be at least 1d" in lines
    assert any(
        line.startswith(f"{path}: schedule.interval: interval must be at least 1m")
        for line in lines
    )
    assert "Traceback" not in result.stderr

    # with the schema fixed, every file problem is reported at once
    data = yaml.safe_load(path.read_text())
    data["rules"] = {
        "trash": {"folders": ["Trash"], "older_than": "30d"},
        "keep": {"folders": ["Sent"], "older_than": "52w", "action": "archive",
                 "archive_dir": str(blocker / "archive" / "{account}")},
    }  # fmt: skip
    data["schedule"] = {"interval": "1m"}
    path.write_text(yaml.safe_dump(data))
    result = quotawatch("config", "check", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    expected = [
        f"{path}: account_sources[0].usernames_file: cannot read {tmp_path / 'no-users.txt'}: "
        "No such file or directory",
        f"{path}: state_dir: cannot create {blocker / 'state'}: {blocker} is not a directory",
        f"{path}: accounts[0].ca_file: cannot read {tmp_path / 'missing-ca.pem'}: "
        "No such file or directory",
        f"{path}: accounts[1].ca_file: {not_pem} holds no PEM CA certificate",
        f"{path}: rules.keep.archive_dir: cannot create {blocker / 'archive'}: "
        f"{blocker} is not a directory",
        f"{path}: metrics.basic_auth_password_file: password_file {metrics_pw}: readable or "
        "writable by group or others (mode 0644); run chmod 600 on it",
    ]
    for line in expected:
        assert line in lines, (line, lines)
    assert "scrape-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_state_dir_that_cannot_be_written_stops_plan_before_any_login(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = write(tmp_path, {"state_dir": str(blocker / "state"), "accounts": [account(tmp_path)]})
    result = quotawatch("plan", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{path}: state_dir: cannot create {blocker / 'state'}: {blocker} is not a directory"
    )


def test_bad_password_file_or_ca_file_is_exit_2_from_check(tmp_path: Path) -> None:
    pw = secret_file(tmp_path / "secrets", "loose", "pw-loose-1")
    pw.chmod(0o644)
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    path = write(
        tmp_path,
        {
            "accounts": [
                account(tmp_path, password_file=str(pw)),
                account(tmp_path, name="bob", ca_file=str(tmp_path / "gone.pem")),
                account(tmp_path, name="carol", ca_file=str(not_pem)),
            ]
        },
    )
    result = quotawatch("check", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"alice: FAILED: password_file {pw}: readable or writable by group" in result.stdout
    assert f"bob: FAILED: ca_file {tmp_path / 'gone.pem'}: cannot read" in result.stdout
    assert f"carol: FAILED: ca_file {not_pem}: holds no PEM CA certificate" in result.stdout
    assert "Traceback" not in result.stderr and "internal" not in result.stdout
    assert "pw-loose-1" not in result.stdout + result.stderr


def test_global_options_before_and_after_the_command(tmp_path: Path) -> None:
    path = write(tmp_path, {"state_dir": str(tmp_path / "state"), "accounts": [account(tmp_path)]})
    for args in (
        ["--log-level", "debug", "--log-format", "json", "config", "check", str(path)],
        ["config", "check", str(path), "--log-level", "debug", "--log-format", "json"],
        ["config", "--log-level", "error", "check", str(path)],
    ):
        result = quotawatch(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "OK (1 accounts" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = quotawatch(*command.split(), "--help")
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: quotawatch {command}")
    assert len(description.split()) >= 8, description  # a paragraph, not a title
    assert "exit status:" in result.stdout and "--log-format {text,json}" in result.stdout
    assert re.search(r"^examples?:\n  quotawatch ", result.stdout, re.M), result.stdout


def test_man_page_is_generated_from_the_parser() -> None:
    from quotawatch.manpage import render

    shipped = (REPO / "man" / "quotawatch.1").read_text()
    assert shipped == render(), "run: python -m quotawatch.manpage > man/quotawatch.1"
    for command in COMMANDS:
        assert command == "config" or f".SS quotawatch {command}\n" in shipped


def test_warn_account_is_shown_alike_in_help_and_readme() -> None:
    usage = " ".join(quotawatch("warn", "--help").stdout.split("\n\n")[0].split())
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `quotawatch warn "))
    assert "[--account NAME]" in usage and "[--account NAME]" in row
    for option in re.findall(r"--[a-z-]+", row):
        assert option in usage, option


def test_config_init_writes_a_private_starter_that_passes_check(tmp_path: Path) -> None:
    pw = secret_file(tmp_path / "secrets", "me", "pw-me-1")
    result = quotawatch(
        "config", "init", "imaps://me%40example.org@mail.example.org", "--password-file", str(pw),
        cwd=tmp_path,
    )  # fmt: skip
    target = tmp_path / "quotawatch.yaml"
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert "trash-30d" in text and "junk-14d" in text and "# warnings:" in text
    check = quotawatch("config", "check", str(target))
    assert check.returncode == 0, check.stderr
    assert "OK (1 accounts, 2 rules)" in check.stdout
    config = yaml.safe_load(text)
    assert config["accounts"][0]["username"] == "me@example.org"
    assert config["accounts"][0]["rules"] == ["trash-30d", "junk-14d"]
    assert "warnings" not in config and config["schedule"]["cleanup"] is False

    again = quotawatch("config", "init", "--output", str(target))
    assert again.returncode == 2 and "exists; not overwritten" in again.stderr
    assert target.read_text() == text


def test_config_init_without_url_or_password_names_the_next_step(tmp_path: Path) -> None:
    out = tmp_path / "pop.yaml"
    result = quotawatch("config", "init", "pop3s://bob@pop.example.org:995", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"install -m 600 /dev/stdin {tmp_path / 'bob@pop.example.org.password'}" in result.stdout
    check = quotawatch("config", "check", str(out))
    assert check.returncode == 2  # only because the password file is not there yet
    assert check.stderr.splitlines() == [
        f"{out}: accounts[0].password_file: password_file "
        f"{tmp_path / 'bob@pop.example.org.password'}: file not found"
    ]
    secret_file(tmp_path, "bob@pop.example.org", "pw")
    (tmp_path / "bob@pop.example.org.secret").rename(tmp_path / "bob@pop.example.org.password")
    assert quotawatch("config", "check", str(out)).returncode == 0


def test_url_mistakes_are_usage_errors(tmp_path: Path) -> None:
    for url, message in [
        ("imaps://me:secret@mail.example.org", "do not put the password in the URL"),
        ("http://me@mail.example.org", "unknown scheme http://"),
        ("imaps://mail.example.org", "no user name"),
    ]:
        result = quotawatch("check", url)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "secret" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "quotawatch", "check", "imaps://me@127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no password: run in a terminal to be asked, or give --password-file" in result.stderr
