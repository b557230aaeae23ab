"""Helpers shared by integration and e2e tests: write configs and secret files for sandbox users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry


def secret_file(directory: Path, name: str, value: str) -> Path:
    """A password file with mode 0600, as quotawatch requires."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.secret"
    path.write_text(value)
    path.chmod(0o600)
    return path


def imap_account(
    dovecot: Any, name: str, username: str, password: str, directory: Path, **overrides: Any
) -> dict[str, Any]:
    """An account dict for the sandbox's implicit-TLS IMAP port."""
    account: dict[str, Any] = {
        "name": name,
        "protocol": "imap",
        "host": dovecot.host,
        "port": dovecot.imaps_port,
        "tls": "implicit",
        "ca_file": str(dovecot.ca_file),
        "username": username,
        "password_file": str(secret_file(directory / "secrets", name, password)),
        "connect_timeout": 5,
        "timeout": 30,
    }
    account.update(overrides)
    return account


def write_config(directory: Path, accounts: list[dict[str, Any]], **top: Any) -> Path:
    """Write quotawatch.yaml into ``directory`` with these accounts and top-level keys."""
    data: dict[str, Any] = {"state_dir": str(directory / "state"), "accounts": accounts}
    data.update(top)
    path = directory / "quotawatch.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def counter_value(counters: Any, name: str, labels: dict[str, str]) -> float | None:
    """A counter's value read back by name from a private registry, as Prometheus would see it."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(counters)
    value: float | None = registry.get_sample_value(name, labels)
    return value


def assert_sources_sum_to_the_fleet(reg: CollectorRegistry) -> None:
    """Each per-source/host family, summed over its labels, gives its fleet-wide twin."""
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in reg.collect():
        for sample in family.samples:
            if sample.name.startswith("quotawatch_source_") and "host" in sample.labels:
                rest = tuple(sorted((k, v) for k, v in sample.labels.items()
                                    if k not in ("source", "host")))  # fmt: skip
                key = (sample.name, rest)
                totals[key] = totals.get(key, 0.0) + sample.value
    twins = {
        "quotawatch_source_usage_bytes": "quotawatch_fleet_usage_bytes",
        "quotawatch_source_limit_bytes": "quotawatch_fleet_limit_bytes",
        "quotawatch_source_accounts_failing": "quotawatch_fleet_accounts_failing",
        "quotawatch_source_accounts_checked": "quotawatch_fleet_accounts_checked",
        "quotawatch_source_accounts_omitted": "quotawatch_metrics_accounts_omitted",
        "quotawatch_source_accounts_configured": "quotawatch_accounts_configured",
        "quotawatch_source_usage_ratio_bucket": "quotawatch_fleet_usage_ratio_bucket",
        "quotawatch_source_usage_ratio_gcount": "quotawatch_fleet_usage_ratio_gcount",
        "quotawatch_source_usage_ratio_gsum": "quotawatch_fleet_usage_ratio_gsum",
    }
    names = {name for name, _rest in totals}
    assert set(twins) - {"quotawatch_source_accounts_failing"} <= names <= set(twins), totals
    for (name, rest), total in totals.items():
        fleet = reg.get_sample_value(twins[name], dict(rest))
        assert fleet == pytest.approx(total), (name, rest)
    # the fleet's non-zero failure reasons all show up per source and host
    for family in reg.collect():
        for sample in family.samples:
            if sample.name == "quotawatch_fleet_accounts_failing" and sample.value:
                key = ("quotawatch_source_accounts_failing", (("reason", sample.labels["reason"]),))
                assert key in totals, key
