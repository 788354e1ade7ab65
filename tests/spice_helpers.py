"""Shared skip rule and designs for the simulator tests."""
import shutil

import pytest

from spice.shared_lib import find_library

HAVE_LIB = find_library() is not None
HAVE_EXE = shutil.which("ngspice") is not None
needs_ngspice = pytest.mark.skipif(not (HAVE_LIB or HAVE_EXE),
                                   reason="ngspice not installed (apt-get install ngspice libngspice0)")
needs_lib = pytest.mark.skipif(not HAVE_LIB, reason="libngspice not installed (apt-get install libngspice0)")
needs_exe = pytest.mark.skipif(not HAVE_EXE, reason="ngspice executable not installed (apt-get install ngspice)")

D5 = dict(w1=10.0, w2=10.0, w3=10.0, l1=1.0, l2=1.0, l3=1.0, ibias=10e-6)
D2 = dict(w1=10.0, w2=10.0, w3=10.0, w4=40.0, w5=20.0, l1=1.0, l2=1.0, l3=1.0, l4=0.5, l5=1.0,
          cc=1e-12, cr=5e3, ibias=10e-6)
