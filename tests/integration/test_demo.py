"""The demo as scripts/demo runs it: every kind of rule acts, and a second run starts from fresh
sample mailboxes (``python -m sandbox demo-up DIR --reset``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.dovecot import DOVECOT_BIN, make_base_dir
from scripts.demo_config import demo_config

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    if not Path(DOVECOT_BIN).exists():
        pytest.fail(f"Dovecot is not installed ({DOVECOT_BIN})")
    base = make_base_dir("qw-demo-")
    try:
        yield base
    finally:
        run("-m", "sandbox", "demo-down", str(base))
        shutil.rmtree(base, ignore_errors=True)


def plan(config: Path) -> dict[str, Any]:
    result = run("-m", "quotawatch", "plan", "--json", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    return {a["name"]: a for a in json.loads(result.stdout)["accounts"]}


def test_demo_shows_every_rule_acting_and_starts_fresh_each_run(demo_dir: Path) -> None:
    up = run("-m", "sandbox", "demo-up", str(demo_dir), "--reset")
    assert up.returncode == 0, up.stdout + up.stderr
    config = demo_dir / "quotawatch.yaml"
    config.write_text(yaml.safe_dump(demo_config(demo_dir), sort_keys=False))
    before = plan(config)
    acting = {a["rule"] for p in before.values() for a in p["actions"]}
    assert acting == {"trash-30d", "junk-14d", "make-room", "pop-60d"}, before
    assert all(p["ok"] for p in before.values())

    applied = run("-m", "quotawatch", "cleanup", "--apply", "--config", str(config))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert not any(p["actions"] for p in plan(config).values())  # all done: nothing left

    again = run("-m", "sandbox", "demo-up", str(demo_dir), "--reset")  # scripts/demo, 2nd run
    assert again.returncode == 0, again.stdout + again.stderr
    config.write_text(yaml.safe_dump(demo_config(demo_dir), sort_keys=False))
    after = plan(config)

    def summary(plans: dict[str, Any]) -> list[tuple[str, str, int]]:
        return sorted(
            (name, a["rule"], a["messages"]) for name, p in plans.items() for a in p["actions"]
        )

    assert summary(after) == summary(before)
