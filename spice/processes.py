"""Process definitions: our own BSIM4 model cards plus the fixed testbench conditions.

A is a 180nm-class node (the source domain), B a 130nm-class node (the target domain).
The cards are written by us, not copied from a foundry: parameter values are typical of
public predictive/educational cards for those nodes, chosen so the two nodes differ the way
real ones do -- thinner oxide, lower threshold, lower low-field mobility (higher doping),
stronger drain-induced barrier lowering (pdiblc2) and a lower supply in B.  (B's lower
BSIM4 pclm means *weaker* channel-length modulation: pclm scales 1/V_A,CLM.)

Junction parameters use the BSIM4 names (cjs, cjsws, jss, ...): ngspice's BSIM4 ignores the
BSIM3 names (cj, cjsw, js) with only a warning.  Drain/source areas and perimeters are passed
per instance (see ``diffusion``) because BSIM4 otherwise computes zero junction capacitance.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Process:
    name: str            # "A" | "B"
    description: str
    vdd: float           # V, supply
    cl: float            # F, load capacitance at the op-amp output
    ldiff: float         # um, drain/source diffusion length used for AD/AS/PD/PS
    nmos: str            # model name used by the netlists
    pmos: str
    model_text: str      # the .model cards

    def model_lines(self, design: dict, opamp: str) -> list[str]:
        """The model cards a netlist for ``design`` needs (all of them, for our own cards)."""
        return self.model_text.splitlines()

    def mos_line(self, name, d, g, s, b, kind, w, l) -> str:
        """One transistor instance; w, l in um; kind "nmos" | "pmos"."""
        model = self.nmos if kind == "nmos" else self.pmos
        return f"{name} {d} {g} {s} {b} {model} w={w:.6g}u l={l:.6g}u {diffusion(self.ldiff, w)}"

    def op_vector(self, inst: str, kind: str, param: str) -> str:
        """ngspice name of one device's operating-point quantity, e.g. ("xrep.m1", "nmos", "gm")
        -> "@m.xrep.m1[gm]" (a MOSFET inside subcircuit instance xrep)."""
        return f"@m.{inst}[{param}]"

    @property
    def vcm(self) -> float:
        """Input common-mode voltage (V) of the AC testbenches: mid-supply."""
        return self.vdd / 2

    @property
    def step(self) -> tuple[float, float]:
        """Buffer input step (V): vcm - vdd/8 -> vcm + vdd/8, i.e. a quarter of the supply."""
        return self.vcm - self.vdd / 8, self.vcm + self.vdd / 8


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


PROCESS_A = Process(
    name="A", description="180nm-class, tox 4.1 nm, 1.8 V", vdd=1.8, cl=1e-12, ldiff=0.48,
    nmos="nch_a", pmos="pch_a",
    model_text=_card("nch_a", "nmos", toxe=4.1e-9, vth0=0.45, u0=0.040, ua=-1.0e-9, ub=2.0e-18,
                     vsat=8.0e4, pclm=1.3, pdiblc2=2.0e-3, k1=0.58, cgo=3.5e-10, cjs=1.0e-3,
                     cjsws=2.5e-10, ndep=1.7e17)
    + _card("pch_a", "pmos", toxe=4.1e-9, vth0=-0.45, u0=0.0095, ua=1.0e-9, ub=1.0e-21,
            vsat=8.0e4, pclm=1.1, pdiblc2=1.0e-3, k1=0.56, cgo=3.0e-10, cjs=1.1e-3,
            cjsws=2.2e-10, ndep=1.5e17),
)

PROCESS_B = Process(
    name="B", description="130nm-class, tox 2.6 nm, 1.2 V", vdd=1.2, cl=1e-12, ldiff=0.34,
    nmos="nch_b", pmos="pch_b",
    model_text=_card("nch_b", "nmos", toxe=2.6e-9, vth0=0.34, u0=0.030, ua=-0.6e-9, ub=1.6e-18,
                     vsat=1.0e5, pclm=0.75, pdiblc2=6.0e-3, k1=0.45, cgo=2.8e-10, cjs=1.3e-3,
                     cjsws=1.8e-10, ndep=2.6e17)
    + _card("pch_b", "pmos", toxe=2.6e-9, vth0=-0.33, u0=0.0080, ua=0.8e-9, ub=1.0e-21,
            vsat=9.0e4, pclm=0.6, pdiblc2=4.0e-3, k1=0.42, cgo=2.4e-10, cjs=1.4e-3,
            cjsws=1.6e-10, ndep=2.3e17),
)

PROCESSES = {"A": PROCESS_A, "B": PROCESS_B}
# The data layout's domains: source data come from process A, target data from process B.
DOMAIN_PROCESS = {"source": "A", "target": "B"}


def diffusion(process_ldiff_um: float, w_um: float) -> str:
    """AD/AS/PD/PS for one finger of width w (um): area w*ldiff, perimeter 2*(w+ldiff)."""
    area = w_um * process_ldiff_um * 1e-12
    perim = 2 * (w_um + process_ldiff_um) * 1e-6
    return f"ad={area:.4e} as={area:.4e} pd={perim:.4e} ps={perim:.4e}"
