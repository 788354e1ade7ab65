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


def _card(name, kind, *, toxe, vth0, u0, ua, ub, vsat, pclm, pdiblc2, k1, cgo, cjs, cjsws, ndep):
    # One BSIM4 card.  Only the parameters that shape analog behaviour are set; the rest keep
    # BSIM4 defaults.  cgo = gate-drain/source overlap capacitance per width (F/m).
    return (
        f".model {name} {kind} level=54 version=4.8 binunit=1 capmod=2 mobmod=0 igcmod=0 igbmod=0\n"
        f"+ toxe={toxe} toxp={toxe * 0.9:.3e} toxm={toxe} epsrox=3.9 xj=1.0e-7 ndep={ndep}\n"
        f"+ vth0={vth0} k1={k1} k2=0.01 dvt0=2.2 dvt1=0.53 dsub=0.56 eta0=0.08 etab=-0.07\n"
        f"+ u0={u0} ua={ua} ub={ub} uc=0 vsat={vsat} a0=1.0 ags=0.2 delta=0.01\n"
        f"+ rdsw=150 prwg=0.0 prwb=0.0 wr=1 nfactor=1.5 cdsc=2.4e-4 cit=0\n"
        f"+ pclm={pclm} pdiblc1=0.39 pdiblc2={pdiblc2} pdiblcb=0 drout=0.56 pvag=0.5 fprout=0.2\n"
        f"+ cgso={cgo} cgdo={cgo} cgbo=1e-12 cf=0 ckappas=0.6 ckappad=0.6\n"
        f"+ cjs={cjs} mjs=0.4 pbs=0.8 cjsws={cjsws} mjsws=0.3 pbsws=0.8 cjswgs={cjsws} mjswgs=0.3 pbswgs=0.8\n"
        f"+ jss=1e-6 jsws=1e-12 nf=1\n"
    )
