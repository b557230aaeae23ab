from pathlib import Path

import pytest

from quotawatch.config.secrets import SecretCache, read_secret
from quotawatch.errors import SecretError

SECRET = "s3cret-Passw0rd"


def test_file_secret_strips_one_newline(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    value = read_secret(file=path)
    assert value.get_secret_value() == SECRET
    assert SECRET not in repr(value) and SECRET not in str(value)


def test_group_readable_file_refused_naming_file_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET)
    path.chmod(0o640)
    with pytest.raises(SecretError) as info:
        read_secret(file=path)
    message = str(info.value)
    assert str(path) in message and "0640" in message and SECRET not in message


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="not found"):
        read_secret(file=tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="empty"):
        read_secret(file=empty)


def test_credential_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "alice").write_text(SECRET)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_secret(credential="alice", environ=env).get_secret_value() == SECRET
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY is not set"):
        read_secret(credential="alice", environ={})
    with pytest.raises(SecretError, match="cannot contain"):
        read_secret(credential="../etc/shadow", environ=env)


def test_env_secret_and_cache() -> None:
    cache = SecretCache(environ={"QW_PW": SECRET})
    assert cache.get(None, "QW_PW", None).get_secret_value() == SECRET
    with pytest.raises(SecretError, match="not set"):
        SecretCache(environ={}).get(None, "QW_PW", None)
