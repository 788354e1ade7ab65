"""Results-folder safety: orphaned workers, stale temporaries, Ctrl-C during imports, a shadowing config.py."""
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


def _gone_after_killing(parent: subprocess.Popen, child_pid: int, within_s: float = 10) -> bool:
    """``kill -9`` the parent; whether its child is gone within ``within_s``."""
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + within_s
    while _alive(child_pid) and time.time() < deadline:
        time.sleep(0.1)
    return not _alive(child_pid)


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
    assert _gone_after_killing(proc, child_pid)


def _sleeping_worker(pid_file):
    from core.executor import exit_with_parent
    exit_with_parent()
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_a_spawned_worker_exits_when_its_parent_is_killed(tmp_path):
    """The pipeline's and the harness's workers are multiprocessing spawn children: they wait on the parent's
    sentinel (no pid polling, no race with a parent that dies first)."""
    pid_file = tmp_path / "pid"
    parent = ("import multiprocessing as mp, time; from tests.test_safety import _sleeping_worker; "
              f"p = mp.get_context('spawn').Process(target=_sleeping_worker, args=({str(pid_file)!r},)); "
              "p.start(); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT)
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone_after_killing(proc, int(pid_file.read_text()))


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


def test_ctrl_c_while_an_entry_point_still_imports_is_one_line():
    """Before run_main installs its handler (the module's own imports), Ctrl-C printed a traceback through importlib."""
    code = (f"import sys; sys.argv[0] = {str(ROOT / 'active.py')!r}; import core; "
            "raise KeyboardInterrupt   # as if Ctrl-C arrived in the middle of the entry point's imports")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode in (130, -signal.SIGINT)
    assert out.stderr.strip() == "interrupted: files already written are complete (writes are atomic)."
    # a user's own script importing the toolkit keeps Python's handling (its traceback)
    code = "import core; raise KeyboardInterrupt"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Traceback" in out.stderr


def test_a_notebook_folders_own_config_py_does_not_shadow_the_toolkits(tmp_path):
    """A user's project folder with its own config.py: ``import config`` took theirs and every stage failed."""
    (tmp_path / "config.py").write_text("PROJECT = 'mine'\n")
    code = ("import config, core.cli, sweep; from core.settings import CONFIG_FILE; "
            "assert config.PROJECT == 'mine'; "                                   # theirs, untouched
            "assert core.cli.config.__file__ == str(CONFIG_FILE) and sweep.config is core.cli.config; "
            "print(core.cli.config.OPAMP_TYPE)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "5t_opamp"
