"""Results-folder safety: orphaned workers, stale temporaries, locks, the better-checkpoint guard, staleness by content."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is dead for our purpose
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_worker_exits_when_its_parent_is_killed(tmp_path):
    """A pipeline/harness worker writes under its parent's lock: after ``kill -9`` of the parent it must not go on."""
    child = ("import os, time; from core.executor import exit_with_parent; exit_with_parent(0.1); "
             "print(os.getpid(), flush=True); time.sleep(60)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}], "
              "stdout=subprocess.PIPE, text=True); print(p.stdout.readline().strip(), flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    assert _alive(child_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _alive(child_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid)


def test_lock_removes_a_killed_writers_temporaries(tmp_path):
    """``kill -9`` mid-save leaves ``.<file>.<random>.tmp`` (its cleanup never ran); the next run holding the lock
    removes it and leaves everything else."""
    from core.outputs import results_lock
    stale = tmp_path / ".5t_opamp_baseline_model.pth.k2j3.tmp"
    stale.write_bytes(b"x" * 100)
    kept = [tmp_path / "5t_opamp_baseline_model.pth", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for f in kept:
        f.write_text("mine")
    with results_lock(tmp_path):
        assert not stale.exists()
    assert all(f.read_text() == "mine" for f in kept)
