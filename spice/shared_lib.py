"""In-process ngspice through libngspice (ctypes), one instance per process.

ngspice keeps global state: initialising the library a second time in one process crashed
silently, so ``engine()`` builds the instance lazily once and every later call reuses it.
Worker processes (joblib/loky, Dask) each get their own instance the first time they simulate.

Debian's ngspice runs 2 OpenMP threads per instance and ignores OMP_NUM_THREADS; with one
worker per core that oversubscribes the CPUs (measured 36-50x slower), so every instance
runs ``set num_threads=1`` before any circuit is loaded.
"""
import ctypes
import ctypes.util
import os

import numpy as np

from core.atomic import deferred_interrupts
from core.errors import ToolkitError

LIB_NAMES = ("libngspice.so.0", "libngspice.so", "libngspice.dylib", "ngspice.dll")


class _VecInfo(ctypes.Structure):
    # struct vector_info from sharedspice.h
    _fields_ = [("v_name", ctypes.c_char_p), ("v_type", ctypes.c_int), ("v_flags", ctypes.c_short),
                ("v_realdata", ctypes.POINTER(ctypes.c_double)),
                ("v_compdata", ctypes.POINTER(ctypes.c_double)),  # ngcomplex_t = 2 doubles
                ("v_length", ctypes.c_int)]


_SEND_CHAR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
_EXIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_bool, ctypes.c_bool, ctypes.c_int,
                         ctypes.c_void_p)
_BG_RUNNING = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_bool, ctypes.c_int, ctypes.c_void_p)


def find_library() -> str | None:
    """Path or soname of libngspice, or None.  $NGSPICE_LIBRARY overrides the search."""
    if os.environ.get("NGSPICE_LIBRARY"):
        return os.environ["NGSPICE_LIBRARY"]
    for name in LIB_NAMES:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return ctypes.util.find_library("ngspice")


class SharedNgspice:
    """A thin synchronous wrapper: load a netlist, run one analysis, read vectors."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.lib.ngSpice_Command.argtypes = [ctypes.c_char_p]
        self.lib.ngSpice_Circ.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        self.lib.ngGet_Vec_Info.argtypes = [ctypes.c_char_p]
        self.lib.ngGet_Vec_Info.restype = ctypes.POINTER(_VecInfo)
        self.lib.ngSpice_CurPlot.restype = ctypes.c_char_p
        self.errors: list[str] = []
        self.version = ""
        self.exited = False
        # Keep the callbacks referenced for the life of the instance (ctypes would free them).
        self._cb = (_SEND_CHAR(self._on_print), _EXIT(self._on_exit), _BG_RUNNING(lambda *a: 0))
        # Status callback (progress %) is NULL on purpose: it fires per time step and costs time.
        rc = self.lib.ngSpice_Init(self._cb[0], None, self._cb[1], None, None, self._cb[2], None)
        if rc != 0:
            raise RuntimeError(f"ngSpice_Init returned {rc}")
        self.command("set num_threads=1")
        self.command("set noaskquit")
        self.command("version")  # prints "** ngspice-NN ..." which _on_print captures

    def _on_print(self, text, _id, _user):
        line = text.decode(errors="replace")
        if line.startswith("stderr"):
            msg = line[7:]
            # Parser chatter that does not affect results is not an error.
            if not msg.startswith(("Warning", "Note", "Using SPARSE")):
                self.errors.append(msg)
        elif "ngspice-" in line and not self.version:
            self.version = line.split("ngspice-")[1].split()[0].strip(" :")
        return 0

    def _on_exit(self, status, unload, quit_, _id, _user):
        self.exited = True  # ngspice hit a fatal error; the instance is not safe to reuse
        return 0

    def command(self, cmd: str) -> int:
        # Ctrl-C during a command lands in a ctypes callback (_on_print), where Python prints
        # "Exception ignored" and drops it; held back here, it is raised once ngspice returns
        with deferred_interrupts():
            return self.lib.ngSpice_Command(cmd.encode())

    def load(self, lines: list[str]) -> None:
        """Replace the current circuit by ``lines`` (a netlist ending in .end)."""
        self.command("destroy all")   # free old plots, or memory grows per design
        self.command("remcirc")
        self.errors.clear()
        arr = (ctypes.c_char_p * (len(lines) + 1))(*[l.encode() for l in lines], None)
        with deferred_interrupts():
            self.lib.ngSpice_Circ(arr)

    def run(self, analysis: str) -> bool:
        """Run one analysis synchronously; True if it produced a new plot without errors."""
        before = self.lib.ngSpice_CurPlot()
        self.errors.clear()
        self.command(analysis)
        after = self.lib.ngSpice_CurPlot()
        return after != before and not any("abort" in e or "error" in e.lower() for e in self.errors)

    def vector(self, name: str) -> np.ndarray | None:
        """A copy of vector ``name`` of the current plot (complex for AC), or None."""
        ptr = self.lib.ngGet_Vec_Info(name.encode())
        if not ptr:
            return None
        info = ptr.contents
        n = info.v_length
        if info.v_compdata:
            flat = np.ctypeslib.as_array(info.v_compdata, shape=(2 * n,)).copy()
            return flat[0::2] + 1j * flat[1::2]
        if info.v_realdata:
            return np.ctypeslib.as_array(info.v_realdata, shape=(n,)).copy()
        return None


_ENGINE: SharedNgspice | None = None
_ENGINE_PID: int | None = None


def check_loadable() -> None:
    """The library ``find_library`` names loads, or one line saying it does not ($NGSPICE_LIBRARY pointing at a
    missing file, a stale linker cache): checked before a run writes anything, instead of at its first
    simulation."""
    path = find_library()
    if path is None:
        return
    try:
        ctypes.CDLL(path)
    except OSError as exc:
        raise _unloadable(path, exc) from None


def _unloadable(path: str, exc: OSError) -> ToolkitError:
    return ToolkitError(f"could not load the ngspice shared library {path!r} ({exc}); fix or unset NGSPICE_LIBRARY, "
                        f"or install libngspice0")


def engine() -> SharedNgspice | None:
    """This process's ngspice instance (created on first use), or None if the library is absent."""
    global _ENGINE, _ENGINE_PID
    if _ENGINE is not None and _ENGINE_PID == os.getpid() and not _ENGINE.exited:
        return _ENGINE
    if _ENGINE is not None and _ENGINE_PID == os.getpid():
        return None  # a fatal error killed this process's instance; a re-init would crash
    path = find_library()
    if path is None:
        return None
    try:
        _ENGINE, _ENGINE_PID = SharedNgspice(path), os.getpid()
    except OSError as exc:
        raise _unloadable(path, exc) from None
    return _ENGINE
