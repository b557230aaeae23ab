"""Benchmark: what splitting the fleet series by account source and mail host costs a scrape.

    python benchmarks/bench_source_split.py [--accounts 10000 100000] [--groups 4] [--rounds 5]

For each size, a state database in a temporary folder gets one compact metric row per account
(5 % at 85 %, the rest spread below 70 %, one in 500 failing), then a collector with the default
``metrics.per_account`` scrapes it twice per round: without the (account, source, host) table
(the fleet series only) and with it (``--groups`` source/host pairs). It prints the best CPU
time of ``--rounds`` scrapes each, the series counts, the aggregates a scrape reads (kept in
memory by the state) beside the SQL that computes them over every row, the CPU time to rewrite
the table and rebuild the kept aggregates (what start-up and each reload do), and what keeping
them up to date adds to each stored check (``save_report``, 200 of them). No mail server is
needed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from quotawatch.config import Metrics
from quotawatch.service.fleet_metrics import BANDS
from quotawatch.service.metrics import Counters, Histogram, StateCollector
from quotawatch.state import State


def best_cpu(work: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def run(accounts: int, groups: int, rounds: int) -> None:
    state = State(tempfile.mkdtemp(prefix="qw-split-"))
    names = [f"u{i:06d}" for i in range(accounts)]
    rows = []
    for i, name in enumerate(names):
        ratio = 0.85 if i % 20 == 0 else (i % 70) / 100  # 5 % above 80 %, the rest below 70 %
        ok = i % 500 != 0
        rows.append((name, 1.0, int(ok), None if ok else "auth", 1.0, 0.1, ratio,
                     int(ratio * 1e8), int(1e8), 0, "{}"))  # fmt: skip
    with state.transaction() as db:
        db.executemany("INSERT INTO metric_rows VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    table = [(n, f"source{i % 2}", f"imap{i * groups // 2 // accounts}")
             for i, n in enumerate(names)]  # fmt: skip
    collector = StateCollector(state, Counters(), Histogram())
    level = Metrics().per_account_level(accounts)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def scrape() -> bytes:
        return generate_latest(registry)

    collector.configure(names, 10, False, None, level, ())
    plain = best_cpu(scrape, rounds)
    series_plain = sum(len(m.samples) for m in registry.collect())
    rewrite = best_cpu(lambda: collector.configure(names, 10, False, None, level, table), 3)
    split = best_cpu(scrape, rounds)
    series_split = sum(len(m.samples) for m in registry.collect())
    sql = best_cpu(lambda: state.source_summaries_sql(BANDS, level), rounds)
    fleet_sql = best_cpu(lambda: state.fleet_summary_sql(BANDS), rounds)
    kept = best_cpu(lambda: (state.source_summaries(BANDS, level), state.fleet_summary(BANDS)),
                    rounds)  # fmt: skip
    saves = 200
    ok_data = {"usage_ratio": 0.42, "quota": [{"root": "q", "resource": "STORAGE",
               "usage": 42, "limit": 100}]}  # fmt: skip
    at = datetime.now(UTC)
    save = best_cpu(lambda: [state.save_report(n, at, True, ok_data) for n in names[:saves]], 3)
    state.keep_totals(BANDS, None)  # what set_account_groups does at a reload when kept
    state.keep_totals(BANDS, level)
    rebuild = best_cpu(lambda: state.source_summaries(BANDS, level), 1)
    print(f"{accounts:>7} accounts, {len(set((s, h) for _n, s, h in table))} source/host pairs: "
          f"scrape {plain * 1000:.1f} ms CPU ({series_plain} series) -> "
          f"{split * 1000:.1f} ms ({series_split} series); "
          f"aggregates kept {kept * 1000:.2f} ms (by SQL: split {sql * 1000:.1f} ms, "
          f"fleet {fleet_sql * 1000:.1f} ms); "
          f"rewriting the table at a (re)load {rewrite * 1000:.0f} ms, rebuilding the kept "
          f"aggregates {rebuild * 1000:.0f} ms; save_report {save / saves * 1e6:.0f} µs")  # fmt: skip
    state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--groups", type=int, default=4, help="source/host pairs (even)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for accounts in args.accounts:
        run(accounts, args.groups, args.rounds)


if __name__ == "__main__":
    main()
