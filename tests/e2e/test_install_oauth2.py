"""The ``oauth2`` extra as README documents it: without it an ``auth: oauth2`` account fails with one
line naming the extra; ``pip install 'quotawatch[oauth2]'`` brings msal, google-auth and authlib.
Marked ``install``: it uses the package index for dependencies."""

from __future__ import annotations

import json
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


def test_without_the_extra_one_line_names_it_and_with_it_the_libraries_import(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", QW_APP="app-secret")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp_path / "qw.yaml"
    account = {
        "name": "shared", "provider": "microsoft365", "username": "shared@contoso.example",
        "quota": "50GB", "auth": "oauth2",
        "oauth2": {"provider": "microsoft", "tenant": "contoso.example", "client_id": "app",
                   "client_secret_env": "QW_APP"},
    }  # fmt: skip
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "accounts": [account]}))
    command = str(venv / "bin" / "quotawatch")
    check = subprocess.run(
        [command, "check", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 2, check.stderr  # a config problem: exit 2
    (report,) = json.loads(check.stdout)["accounts"]
    assert report["reason"] == "config"
    assert report["error"].startswith(
        "auth: oauth2 with provider microsoft needs the Python package msal: "
        "pip install 'quotawatch[oauth2]'"
    )
    assert "Traceback" not in check.stderr

    extra = subprocess.run(
        [*pip, f"{source}[oauth2]"], capture_output=True, text=True, timeout=600, env=env
    )
    assert extra.returncode == 0, extra.stdout + extra.stderr
    imports = "import msal, google.oauth2.service_account, authlib.integrations.requests_client"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", imports], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
