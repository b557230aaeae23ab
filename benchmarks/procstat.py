"""CPU time of a process tree from /proc, for the benchmarks' "server CPU" figures."""

from __future__ import annotations

import os
from pathlib import Path


def tree_cpu(pid_file: Path) -> float:
    """CPU seconds so far of the process named in ``pid_file`` and every process under it, with
    the processes that already exited and were reaped (e.g. Dovecot's one imap process per
    session, which its master reaps)."""
    root = int(Path(pid_file).read_text().split()[0])
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        ticks[int(entry.name)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")
