"""Ctrl-C and SIGTERM during `cleanup --apply` (a real CLI process against the real Dovecot): the
batch in flight finishes and is audited, nothing is left marked, and the output says what was done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotawatch.config import load_config
from quotawatch.state import State
from sandbox.faultproxy import FaultProxy
from tests.integration.test_fault_sweep import configure
from tests.integration.test_pop3 import T0, message, pop_dict, server_view
from tests.integration.test_retention import deliver, raw, setup, uids_in
from tests.support import write_config

REPO = Path(__file__).resolve().parents[2]


def cleanup_interrupted(path: Path, signo: int) -> tuple[int, str, str]:
    """Run `cleanup --apply --progress`, send ``signo`` once the first batch is reported done."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(path), "--apply",
         "--progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait for proof that a batch is through: no sleeps
        seen.append(line)
        if " of " in line and "messages in" in line:
            proc.send_signal(signo)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, "".join(seen) + err


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanup_between_batches(
    tmp_path: Path, user: Any, signo: signal.Signals
) -> None:
    trash = deliver(user, "Trash", [(40, "S")] * 3000, size=200)
    young = deliver(user, "Junk", [(1, "")] * 3)
    config, _account, path = setup(
        tmp_path, user, ["trash-30d"], max_delete_fraction=1.0, max_delete_messages=10_000
    )
    code, out, err = cleanup_interrupted(path, signo)
    assert code == 128 + signo, (out, err)
    assert f"{signo.name}: finishing the batch in flight" in err
    assert f"stopped by {signo.name}" in err
    left = uids_in(user, "Trash")
    gone = sorted(set(trash) - set(left))
    assert 0 < len(gone) < len(trash), "stopped after at least one batch, before the end"
    assert len(gone) % 500 == 0, "whole batches only"
    assert f"delete {len(gone)} of 3000 planned from Trash" in out
    assert f"deleted {len(gone)} of 3000 planned messages in Trash (" in out
    with raw(user) as c:
        c.select_folder("Trash", readonly=True)
        assert c.search(["DELETED"]) == [], "nothing is left marked for another client's EXPUNGE"
    assert uids_in(user, "Junk") == young
    lines = [json.loads(x) for x in (config.state_dir / "audit.jsonl").read_text().splitlines()]
    done = Counter(e["uid"] for e in lines if e["status"] == "done")
    assert done == Counter(gone), "every message gone is audited done, exactly once"
    assert not list((config.state_dir / "journal").glob("*")), "no intent left open"
    # the next run finishes the job
    rerun = subprocess.run(
        [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(path), "--apply"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert uids_in(user, "Trash") == []
    lines = [json.loads(x) for x in (config.state_dir / "audit.jsonl").read_text().splitlines()]
    assert Counter(e["uid"] for e in lines if e["status"] == "done") == Counter(trash)


@pytest.mark.parametrize(
    ("signo", "inside"),
    [(signal.SIGTERM, b"UID STORE"), (signal.SIGINT, b"UID EXPUNGE")],
    ids=["SIGTERM-in-STORE", "SIGINT-in-EXPUNGE"],
)
def test_a_signal_inside_a_batch_finishes_that_batch(
    tmp_path: Path, user: Any, signo: signal.Signals, inside: bytes
) -> None:
    """The signal lands while the server's answer to the first batch's ``UID STORE`` (or ``UID
    EXPUNGE``) is held back by the fault proxy: that batch is finished and audited, no further
    command is sent, the CLI says what was done and exits 128 + signal, and no message is left
    marked ``\\Deleted`` (none without an audit entry); the next run does the rest."""
    trash = deliver(user, "Trash", [(40, "S")] * 1200, size=200)
    young = deliver(user, "Trash", [(2, "S")] * 3, size=200)
    with FaultProxy(
        user.dovecot.host, user.dovecot.imap_port, hold=inside, connection=None
    ) as proxy:
        configure(user, tmp_path, tmp_path / "state", proxy.port, rules=["trash-30d"],
                  max_delete_messages=10_000)  # fmt: skip
        path = tmp_path / "quotawatch.yaml"
        proc = subprocess.Popen(
            [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(path), "--apply",
             "--progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        assert proc.stderr is not None
        safety = threading.Timer(60, proxy.release)  # never hang the suite if the CLI is silent
        safety.start()
        try:
            assert proxy.held.wait(60), "the first batch's command never reached the server"
            proc.send_signal(signo)  # the CLI is inside the batch, waiting for the answer
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "finishing the batch in flight" in line:
                    break
            proxy.release()
            out, err = proc.communicate(timeout=120)
        finally:
            safety.cancel()
            proxy.release()
        err = "".join(seen) + err
        assert f"{signo.name}: finishing the batch in flight" in err, err
        assert proc.returncode == 128 + signo, (out, err)
        assert f"stopped by {signo.name}" in err
        left = uids_in(user, "Trash")
        gone = sorted(set(trash) - set(left))
        assert gone == trash[:500], "the batch in flight was finished, and nothing after it"
        assert set(young) <= set(left), "nothing outside the plan is gone"
        assert "delete 500 of 1200 planned from Trash" in out, out
        with raw(user) as c:
            c.select_folder("Trash", readonly=True)
            assert c.search(["DELETED"]) == [], "nothing left marked for another client's EXPUNGE"
        lines = [
            json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
        ]
        done = Counter(e["uid"] for e in lines if e["status"] == "done")
        assert done == Counter(gone), "every message gone is audited done, exactly once"
        assert not list((tmp_path / "state" / "journal").glob("*")), "no intent left open"
        rerun = subprocess.run(
            [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(path), "--apply"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert uids_in(user, "Trash") == young
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert Counter(e["uid"] for e in lines if e["status"] == "done") == Counter(trash)


def test_sigterm_during_pop3_cleanup_deletes_nothing_and_says_so(tmp_path: Path, user: Any) -> None:
    """POP3 deletes only at QUIT: stopped after a DELE batch, the session ends without QUIT."""
    user.dovecot.deliver_bulk(user.name, "INBOX", [(message(i, 300), T0, "") for i in range(1500)])
    rule = {"folders": ["INBOX"], "older_than": "60d", "age": "saved", "allow_inbox": True}
    acct = pop_dict(user, tmp_path, rules=["pop-old"], max_delete_fraction="100%",
                    max_delete_messages=10_000)  # fmt: skip
    path = write_config(tmp_path, [acct], rules={"pop-old": rule})
    uidls = server_view(user, tmp_path)[2]
    state = State(load_config(path).state_dir)  # seen 100 days ago: every message is due
    state.first_seen(user.name, "INBOX", 0, uidls, datetime.now(UTC) - timedelta(days=100))
    state.close()
    code, out, err = cleanup_interrupted(path, signal.SIGTERM)
    assert code == 143, (out, err)
    assert "marked for deletion 500 of 1500" in err
    assert "delete 0 of 1500 planned from INBOX" in out
    assert server_view(user, tmp_path)[2] == uidls, "no QUIT, nothing deleted"
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert {e["status"] for e in lines} <= {"intent", "kept"}
    kept = [e for e in lines if e["status"] == "kept"]
    assert any("no QUIT" in e["why"] for e in kept), "the marked batch: not deleted, and why"
    assert Counter(e["uid"] for e in kept) == Counter(
        e["uid"] for e in lines if e["status"] == "intent"
    )
    assert not list((tmp_path / "state" / "journal").glob("*")), "no intent left open"
    rerun = subprocess.run(
        [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(path), "--apply"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server_view(user, tmp_path)[2] == []
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert Counter(e["uid"] for e in lines if e["status"] == "done") == Counter(uidls)
