"""The ``ldap`` extra as README documents it: without it an ``ldap`` account source fails with one
line naming the extra; ``pip install 'quotawatch[ldap]'`` builds and brings python-ldap (against
libldap2-dev and libsasl2-dev, which scripts/setup.sh installs). Marked ``install``: it uses the
package index for dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.install]

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "demo-state", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache"
)


def test_without_the_extra_one_line_names_it_and_with_it_python_ldap_imports(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", QW_LDAP="pw")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp_path / "qw.yaml"
    ldap = {"url": "ldaps://ldap.invalid", "base": "dc=example,dc=org",
            "bind_dn": "cn=qw,dc=example,dc=org", "bind_password_env": "QW_LDAP"}  # fmt: skip
    template = {"host": "mail.example.org", "username": "{user}", "password_env": "QW_LDAP"}
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                      "account_sources": [{"ldap": ldap, "template": template}]}))  # fmt: skip
    check = subprocess.run(
        [str(venv / "bin" / "quotawatch"), "check", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 2, check.stderr  # a config problem: exit 2
    assert check.stderr.strip() == (
        "account_sources with ldap needs the Python package python-ldap: "
        "pip install 'quotawatch[ldap]' (or pipx inject quotawatch python-ldap)"
    )

    extra = subprocess.run(
        [*pip, f"{source}[ldap]"], capture_output=True, text=True, timeout=900, env=env
    )
    assert extra.returncode == 0, extra.stdout + extra.stderr
    imports = "import ldap, ldap.controls; print(ldap.__version__)"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", imports], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
