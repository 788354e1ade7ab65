"""An objective under the spec: minimise or maximise one figure of merit among designs that meet the goals.

    --objective min:gate_area       a closed-form figure of the circuit file ([figures]: gate_area, bias_current)
    --objective max:ugf             a metric of the forward model (its pessimistic prediction, mean -/+ kappa std)
    spec file:  [objective]  minimize = "gate_area"    (or maximize = "ugf")

The goals stay constraints; the objective only orders designs that meet them.  In the search each
start s adds ``w_s * z(x)`` to its goal loss, where z is the objective in standardised units, lower
is better:

    figure   z = sense * (log f(x) - mu) / sd     mu, sd: of log f over the starts (f > 0; else f itself)
    metric   z = sense * (mean_j(x) -/+ kappa std_j(x))  in the model's standardised metric space

(sense = +1 to minimise, -1 to maximise), and w_s runs over ``WEIGHTS`` across the starts.  The goal
loss is a hinge about one unit steep per standardised unit of violation, so a weight below 1 keeps
the goals first; the spread of weights lets some starts push the objective hard and others stay well
inside the spec.  Ranking: designs whose pessimistic prediction meets every goal first, ordered by
the objective; then the rest by (goals missed, goal loss) as without an objective.  With a margin m
(``--objective-margin``), among the designs meeting every goal those that still meet them at
mean -/+ (kappa + m) std come first: the objective drives designs to the spec's edge, where the
model's error decides whether they pass in simulation.  With ``PLAIN_SLOTS`` (``--plain-slots``) the last
of the top-k are the best designs by the spec alone (as without an objective): a hedge, so a batch of
simulations still holds designs well inside the spec.

``pareto_front`` gives the designs that are best in two directions at once (the objective and one
metric, e.g. bias current vs ugf) among the searched designs predicted to meet the other goals.
"""
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import ToolkitError

WEIGHTS = np.geomspace(0.03, 0.5, 6)   # objective weight per start, cycled (see the module docstring)
PLAIN_SLOTS = 4   # of the top-k, how many are the plain ranking's best (no objective): a hedge (inverse_opt --plain-slots)
MARGIN = 1.0   # extra stds of pessimism a design needs to be ordered by the objective first (inverse_opt --objective-margin)
SENSES = {"min": 1.0, "minimize": 1.0, "minimise": 1.0, "max": -1.0, "maximize": -1.0, "maximise": -1.0}
TORCH_FUNCTIONS = {"min": torch.minimum, "max": torch.maximum, "sqrt": torch.sqrt, "log10": torch.log10}
NUMPY_FUNCTIONS = {"min": np.minimum, "max": np.maximum, "sqrt": np.sqrt, "log10": np.log10}


@dataclass
class Objective:
    name: str
    sense: float            # +1 minimise, -1 maximise
    kind: str               # "figure" | "metric"
    unit: str = ""
    circuit: object = None  # spice.circuit_file.Circuit, for a figure

    @property
    def word(self) -> str:
        return "min" if self.sense > 0 else "max"

    def describe(self) -> str:
        return f"{'minimise' if self.sense > 0 else 'maximise'} {self.name}" + (f" ({self.unit})" if self.unit else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "sense": self.word, "kind": self.kind, "unit": self.unit}


def make_objective(sense: str, name: str, *, y_cols, circuit=None, where: str = "--objective") -> Objective:
    """The Objective for ``sense`` (min|max) and ``name`` (a metric of the model or a figure of ``circuit``,
    whose design variables must be the model's features: ``figure_circuit``)."""
    s = SENSES.get(str(sense).strip().lower())
    if s is None:
        raise ToolkitError(f"{where}: {sense!r} is not min or max; e.g. --objective min:gate_area")
    name = str(name).strip()
    figures = dict(circuit.figures) if circuit is not None else {}
    if name in y_cols:
        from spice.measure import METRIC_UNITS, OP_METRIC_UNITS
        return Objective(name, s, "metric", {**METRIC_UNITS, **OP_METRIC_UNITS}.get(name, ""))
    if name in figures:
        return Objective(name, s, "figure", circuit.figure_units.get(name, ""), circuit)
    known = list(y_cols) + list(figures)
    hint = "" if circuit is not None else (" (figures such as gate_area need the circuit file: --circuit FILE.toml, "
                                           "or the data's circuit as --opamp)")
    raise ToolkitError(f"{where}: {name!r} is neither a metric of the model nor a figure of the circuit; "
                       f"known: {known}{hint}")


def parse_objective(text: str, *, y_cols, circuit=None, flag: str = "--objective") -> Objective:
    """'min:gate_area' / 'max:ugf' -> Objective."""
    if ":" not in str(text):
        raise ToolkitError(f"{flag} must be min:NAME or max:NAME (e.g. min:gate_area, max:ugf), got {text!r}")
    sense, name = str(text).split(":", 1)
    return make_objective(sense, name, y_cols=y_cols, circuit=circuit, where=flag)


def figure_circuit(opamp, x_cols):
    """The circuit whose [figures] apply to a model with features ``x_cols``: a shipped circuit name or a
    circuit file whose design variables are those features; None otherwise (the user's own data)."""
    from spice.circuits import BUILTINS, circuit
    if not (isinstance(opamp, str) and (opamp in BUILTINS or opamp.endswith(".toml"))):
        return None
    c = circuit(opamp)
    return c if sorted(c.features) == sorted(x_cols) else None


def physical_x(pre, x_scaled: torch.Tensor) -> dict:
    """{feature: tensor (N,)} in physical units from model-space x (N, D): differentiable."""
    x = x_scaled * torch.as_tensor(pre.x_scale, dtype=x_scaled.dtype) + torch.as_tensor(pre.x_mean, dtype=x_scaled.dtype)
    return {c: (torch.exp(x[:, j]) if c in pre.log_x_cols else x[:, j]) for j, c in enumerate(pre.x_cols)}


def figure_values(objective: Objective, pre, x_scaled: torch.Tensor) -> torch.Tensor:
    """The figure (N,) in its unit for model-space designs (N, D)."""
    value = objective.circuit.figure_of_columns(objective.name, physical_x(pre, x_scaled), TORCH_FUNCTIONS)
    return torch.as_tensor(value, dtype=x_scaled.dtype).expand(len(x_scaled))


def figures_table(circuit, frame) -> dict:
    """{figure: numpy (N,)} of every figure of ``circuit`` for physical designs ``frame`` (a DataFrame)."""
    if circuit is None:
        return {}
    cols = {c: frame[c].to_numpy(float) for c in circuit.features}
    return {k: np.broadcast_to(np.asarray(circuit.figure_of_columns(k, cols, NUMPY_FUNCTIONS), float),
                               (len(frame),)).copy() for k in circuit.figures}


class ObjectiveTerm:
    """``term(x, mean, std) -> (N,)`` z-scored objective (lower is better) for the search; ``value`` the
    objective in physical units (figure) or the pessimistic prediction (metric, physical)."""

    def __init__(self, objective: Objective, pre, x_reference: torch.Tensor, *, kappa: float):
        self.objective, self.pre, self.kappa = objective, pre, float(kappa)
        self.j = list(pre.y_cols).index(objective.name) if objective.kind == "metric" else None
        self.log, self.mu, self.sd = False, 0.0, 1.0
        if objective.kind == "figure":
            with torch.no_grad():
                f = figure_values(objective, pre, torch.as_tensor(x_reference, dtype=torch.float32)).double()
            self.log = bool((f > 0).all())
            f = torch.log(f) if self.log else f
            self.mu, self.sd = float(f.mean()), max(float(f.std()), 1e-12) if len(f) > 1 else 1.0

    def pessimistic(self, mean, std):
        """Model-space metric value the ranking trusts: mean - kappa std to maximise, mean + kappa std to minimise."""
        return mean[:, self.j] + self.objective.sense * self.kappa * std[:, self.j]

    def term(self, x, mean, std) -> torch.Tensor:
        if self.objective.kind == "metric":
            return self.objective.sense * self.pessimistic(mean, std)
        f = figure_values(self.objective, self.pre, x)
        f = torch.log(f.clamp_min(1e-300)) if self.log else f
        return self.objective.sense * (f - self.mu) / self.sd

    def value(self, frame, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Physical objective value (N,) of snapped designs ``frame`` (physical, a DataFrame) with their
        model-space prediction (mean, std): for the table and the ranking."""
        if self.objective.kind == "figure":
            return figures_table(self.objective.circuit, frame)[self.objective.name]
        m = torch.as_tensor(mean)
        p = self.pessimistic(m, torch.as_tensor(std)).numpy()
        full = np.array(mean, float, copy=True)
        full[:, self.j] = p
        return self.pre.inverse_y(full)[:, self.j]


def start_weights(n: int) -> torch.Tensor:
    """(n,) objective weight of each start (``WEIGHTS`` cycled)."""
    return torch.as_tensor(np.resize(WEIGHTS, n), dtype=torch.float32)


def pareto_front(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points when both ``a`` and ``b`` (N,) are to be minimised, sorted by ``a``;
    ties keep the first."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    order = np.lexsort((b, a))
    front, best_b = [], np.inf
    for i in order:
        if np.isfinite(a[i]) and np.isfinite(b[i]) and b[i] < best_b:
            front.append(i)
            best_b = b[i]
    return np.asarray(front, int)
