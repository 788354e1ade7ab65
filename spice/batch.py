"""Fallback when libngspice is missing: one ``ngspice -b`` process per design.

The control block does what the shared-library path does in Python: AC sweep, then a transient
whose length follows the measured unity-gain frequency.  A ``.spiceinit`` with
``set num_threads=1`` sits in the run folder because batch mode reads it before the netlist
(Debian's ngspice otherwise runs 2 OpenMP threads and ignores OMP_NUM_THREADS).
"""
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# 100 points per decade: at 10 the phase margin of ~4 % of two-stage designs (sharp phase
# features near the ugf) moved by > 1 deg against a 1000-point grid; at 100, ugf is within 0.4 %.
AC_CMD = "ac dec 100 1m 10g"
TIMEOUT_S = 120


def find_ngspice() -> str | None:
    return shutil.which("ngspice")


def version(exe: str) -> str:
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if "ngspice-" in line:
            return line.split("ngspice-")[1].split()[0].strip(" :")
    return "unknown"


def _read_wrdata(path: Path, ncols: int) -> np.ndarray | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = np.loadtxt(path, ndmin=2)
    return data if data.shape[1] >= ncols else None


def run_design(exe: str, netlists: tuple[list[str], list[str]], *, slew_time: float, settle_taus: float, points: int,
               tran_only_tstop: float | None = None, op_vectors: dict | None = None) -> dict:
    """Run (AC netlist, transient netlist) in one process: returns arrays freq/adm/acm and
    t/vout (absent when an analysis failed).  With ``tran_only_tstop`` only the transient runs.
    ``op_vectors`` ({column: ngspice vector}): run ``op`` first and return {column: value} as "op"."""
    ac_net, tr_net = netlists
    if tran_only_tstop is None:
        body = ac_net[:-1]  # drop .end; the control block goes before it
        op_ctrl = (["op", "wrdata op.txt " + " ".join(op_vectors.values())] if op_vectors else [])
        ctrl = [
            ".control", *op_ctrl, AC_CMD,
            "wrdata ac.txt out_dm out_cm",
            "meas ac ugfm when vm(out_dm)=1 fall=1",
            f"let tstop = {slew_time:.6e} + {settle_taus} / (6.283185307 * ugfm)",
            f"let tstep = tstop / {points}",
            "set tstopv = $&tstop",   # variables outlive the AC plot; vectors do not
            "set tstepv = $&tstep",
            "source tr.cir",
            "tran $tstepv $tstopv 0 $tstepv",
            "wrdata tr.txt out_tr", ".endc",
        ]
    else:
        ts = tran_only_tstop
        body = tr_net[:-1]
        ctrl = [".control", f"tran {ts / points:.6e} {ts:.6e} 0 {ts / points:.6e}",
                "wrdata tr.txt out_tr", ".endc"]
    with tempfile.TemporaryDirectory(prefix="ngspice_b_") as tmp:
        tmp = Path(tmp)
        (tmp / ".spiceinit").write_text("set num_threads=1\n")
        (tmp / "tb.cir").write_text("\n".join(body + ctrl + [".end"]) + "\n")
        (tmp / "tr.cir").write_text("\n".join(tr_net) + "\n")
        try:
            subprocess.run([exe, "-b", "tb.cir"], cwd=tmp, capture_output=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {}
        out = {}
        ac = _read_wrdata(tmp / "ac.txt", 6)
        if ac is not None:
            # wrdata writes "f re im" per complex vector: f, re_dm, im_dm, f, re_cm, im_cm
            out.update(freq=ac[:, 0], adm=ac[:, 1] + 1j * ac[:, 2], acm=ac[:, 4] + 1j * ac[:, 5])
        if op_vectors:
            op = _read_wrdata(tmp / "op.txt", 2 * len(op_vectors))
            if op is not None:
                # wrdata writes "scale value" per real vector: the values are the odd columns.
                out["op"] = dict(zip(op_vectors, op[0, 1::2]))
        tr = _read_wrdata(tmp / "tr.txt", 2)
        if tr is not None:
            out.update(t=tr[:, 0], vout=tr[:, 1])
        return out
