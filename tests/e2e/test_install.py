"""``pipx install .`` as README documents it: the repository installs into a fresh environment and
its ``quotawatch`` command runs. Marked ``install``: it uses the package index for dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.install]

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "demo-state", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache"
)


def test_the_repository_installs_and_its_command_runs(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP)  # a clean copy, so the checkout stays untouched
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    pipx = shutil.which("pipx")
    assert pipx, "pipx is missing: scripts/setup.sh installs Debian's pipx"
    # exactly what README says, into a private PIPX_HOME
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"))
    install = [pipx, "install", str(source)]
    command = tmp_path / "bin" / "quotawatch"
    done = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: quotawatch") and "config" in result.stdout
    result = subprocess.run(
        [str(command), "check", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0 and "imaps://USER@HOST" in result.stdout
