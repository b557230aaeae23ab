"""The deploy/ files: systemd unit (verify, security score), Prometheus rules and scrape config, dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotawatch.service.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "quotawatch.service"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "quotawatch.json"

METRIC_RE = re.compile(r"\bquotawatch_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_gcount", "_gsum")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (Debian: systemd / prometheus packages)"
    return path


def metric_family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in METRIC_NAMES:
            return name[: -len(suffix)]
    return name


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's quotawatch (verify needs the binary)."""
    exe = Path(sys.executable).parent / "quotawatch"
    assert exe.exists(), exe
    path = tmp_path / "quotawatch.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/quotawatch", str(exe)))
    return path


def test_unit_verifies(unit_copy: Path) -> None:
    proc = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit_copy)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "quotawatch.service" not in proc.stderr, proc.stderr


def test_unit_security_exposure_at_most_2(unit_copy: Path) -> None:
    proc = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit_copy)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for quotawatch\.service: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 2.0, proc.stdout


def _service_section() -> list[str]:
    lines = UNIT.read_text().splitlines()
    start = lines.index("[Service]")
    end = lines.index("[Install]")
    return lines[start + 1 : end]


def test_unit_has_required_directives() -> None:
    directives = {
        line.split("=", 1)[0]
        for line in _service_section()
        if "=" in line and not line.startswith("#")
    }
    for key in ("Type", "WatchdogSec", "ExecReload", "DynamicUser", "StateDirectory",
                "ConfigurationDirectory", "TimeoutStopSec"):  # fmt: skip
        assert key in directives, key
    assert "Type=notify" in _service_section()
    assert any(line.startswith("#LoadCredential=") for line in _service_section())


def test_unit_caps_memory_far_above_the_measured_daemon() -> None:
    """MemoryMax= exists, leaves room for 16 workers each at a hostile server's worst case on top
    of the 106 MiB measured with 10,000 accounts, and says when to relax it."""
    lines = _service_section()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("MemoryMax=")]
    value = lines[index].split("=", 1)[1]
    found = re.fullmatch(r"(\d+)([MG])", value)
    assert found, value
    mib = int(found.group(1)) * (1024 if found.group(2) == "G" else 1)
    assert 106 + 16 * 40 <= mib <= 2048, mib
    assert "relax" in lines[index - 1].lower() or "relax" in lines[index - 2].lower()
    assert "106 MiB after one full cycle" in (ROOT / "README.md").read_text()


def test_every_hardening_directive_has_a_comment_saying_when_to_relax() -> None:
    lines = _service_section()
    start = next(i for i, line in enumerate(lines) if line.startswith("DynamicUser="))
    for i in range(start, len(lines)):
        line = lines[i]
        if not line or line.startswith("#"):
            continue
        above = lines[i - 1]
        assert above.startswith("#"), f"no comment above {line!r}"
        block = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            block.append(lines[j])
            j -= 1
        assert "relax" in " ".join(block).lower(), (
            f"comment above {line!r} does not say when to relax it"
        )


def test_alert_rules_pass_promtool() -> None:
    check = subprocess.run([tool("promtool"), "check", "rules", "alerts.yml"], cwd=PROM,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=PROM,
                          capture_output=True, text=True)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_alert_rules_cover_the_issue_and_use_known_metrics() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = " ".join(r["expr"] for r in rules)
    assert "predict_linear" in exprs
    names = {r["alert"] for r in rules}
    assert {"MailboxQuotaNearlyFull", "MailboxQuotaFullSoon", "MailboxCheckFailing",
            "MailboxNoRecentSuccess", "MailboxCleanupStuck"} <= names  # fmt: skip
    used = {metric_family(m) for m in METRIC_RE.findall(exprs)}
    assert used <= METRIC_NAMES, used - METRIC_NAMES
    tested = (PROM / "alerts_test.yml").read_text()
    for name in names:
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"


def test_scrape_config_is_valid_prometheus_config(tmp_path: Path) -> None:
    data = yaml.safe_load((PROM / "scrape.yml").read_text())
    data["rule_files"] = [str(PROM / "alerts.yml")]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.run([tool("promtool"), "check", "config", str(config)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["expr"]] if isinstance(node.get("expr"), str) else []
        for value in node.values():
            out += _exprs(value)
        return out
    if isinstance(node, list):
        return [e for item in node for e in _exprs(item)]
    return []


def test_dashboard_is_valid_and_uses_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "account"} <= set(variables)
    titles = [p["title"] for p in dash["panels"]]
    assert "Top 20 fullest accounts" in titles and "Accounts by usage band" in titles
    assert "Quota over time" in titles and "Largest folders" in titles and "Cleanups" in titles
    assert "Above 90% by source/host" in titles and "Failing accounts by source/host" in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = _exprs(dash["panels"])
    assert len(exprs) >= 15
    used = {metric_family(m) for e in exprs for m in METRIC_RE.findall(e)}
    assert used <= METRIC_NAMES, used - METRIC_NAMES
    assert "topk(20, quotawatch_quota_usage_ratio" in " ".join(exprs)


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every panel query, with the template variables filled in, is valid PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = _exprs(dash["panels"])
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    rules = []
    for i, expr in enumerate(exprs):
        expr = expr.replace("$account", "alice").replace("$job", ".+")
        expr = expr.replace("$__rate_interval", "5m")
        if expr.startswith("label_values("):
            expr = expr[len("label_values(") :].rsplit(",", 1)[0]
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([tool("promtool"), "check", "rules", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_sign_in_alert_names_the_whole_command() -> None:
    """What to run, as ``auth login`` needs it: the config file and the account."""
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    (rule,) = [r for r in rules if r.get("alert") == "MailboxOAuth2SignInLapsing"]
    assert (
        "quotawatch auth login --config <file> --account {{ $labels.account }}"
        in rule["annotations"]["description"]
    )
