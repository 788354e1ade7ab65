"""A round's batch: the designs the previous round's ensemble picks from a candidate pool (``python -m active``).

``choose`` scores the pool with the calibrated ensemble, learns P(simulation OK) from the ledger and hands both to
``acquisition.select``; ``choose_integrated`` gives the GP rules the GP member's posterior covariance.
``val_designs`` / ``uniform_draws`` resolve how many of a batch are uniform draws to validate on.
"""
import math

import numpy as np
import pandas as pd

from active_learning.acquisition import GP_RULES, select
from active_learning.ledger import STATUS, UNIFORM
from core.errors import ToolkitError
from inference.predict import Ensemble


def val_designs(setting: str, rule: str) -> str:
    """ACTIVE_VAL_DESIGNS resolved: "auto" is "picks" for the ``spec`` rule (it is run for simulated designs that meet
    the spec, and a uniform draw seldom does) and "uniform" for every other rule."""
    if setting != "auto":
        return setting
    return "picks" if rule == "spec" else "uniform"


def uniform_draws(rule: str, batch: int, settings: dict) -> int:
    """How many of a round's ``batch`` designs are drawn uniformly from the pool to validate on (ACTIVE_VAL_DESIGNS
    = "uniform": ceil(VAL_SPLIT x batch), leaving the rule at least one pick); 0 for ``random`` (every design is a
    uniform draw) and with "picks" (the validation rows are a share of the rule's own picks)."""
    if settings["ACTIVE_VAL_DESIGNS"] != "uniform" or rule == UNIFORM or batch < 2:
        return 0
    return min(math.ceil(settings["VAL_SPLIT"] * batch), batch - 1)


def choose(ens: Ensemble, rule: str, pool: pd.DataFrame, ledger: pd.DataFrame, batch: int, seed: int,
           round_no: int, spec=None, n_uniform: int = 0) -> pd.DataFrame:
    """The ``batch`` pool designs to simulate: ``n_uniform`` uniform draws first (``uniform_draws``; ledger rule
    ``random``), then the ones ``rule`` picks given them, in pick order; each with its uncertainty score and
    P(simulation OK) learned from the ``ledger``'s statuses (and, with a ``spec``, P(spec met)).  The ``rule``
    column says which drew each design."""
    import torch
    from active_learning.acquisition import feasibility, score, spec_probability
    x_scaled = ens.preprocessing.transform_x(pool[ens.x_cols])
    with torch.no_grad():
        mean, std = ens.predict_scaled(torch.as_tensor(x_scaled))
    mean, std = mean.double().numpy(), std.double().numpy()
    p_ok = feasibility(ens.preprocessing.transform_x(ledger[ens.x_cols].astype(float)),
                       (ledger[STATUS] == "ok").to_numpy(), x_scaled)
    bounds = None
    if spec is not None:
        mspec = spec.model_space(ens.preprocessing)
        bounds = (mspec.lo.double().numpy(), mspec.hi.double().numpy())
    rng = np.random.default_rng([seed, round_no, 17])
    if rule in GP_RULES:
        pick = choose_integrated(ens, rule, x_scaled, mean, std, p_ok, batch, rng, n_uniform)
    else:
        pick = select(rule, x_scaled, mean, std, batch=batch, rng=rng, p_ok=p_ok, spec_bounds=bounds,
                      uniform=n_uniform)
    chosen = pool.iloc[pick].copy()
    chosen["rule"] = [UNIFORM] * n_uniform + [rule] * (len(pick) - n_uniform)
    chosen["score"], chosen["p_ok"] = score(mean, std)[pick], p_ok[pick]
    if bounds is not None:
        chosen["p_spec"] = spec_probability(mean, std, *bounds)[pick]
    return chosen


def choose_integrated(ens: Ensemble, rule: str, x_scaled, mean, std, p_ok, batch: int, rng,
                      n_uniform: int = 0) -> np.ndarray:
    """Pool indices of ``n_uniform`` uniform draws and then the designs ``rule`` (one of GP_RULES) picks given them,
    among a random INTEGRATED_POOL of the pool, from the GP member's posterior covariance there (a random subset of
    a uniform pool is uniform: the uniform draws and the random half of ``mixed_integrated`` stay uniform draws)."""
    import torch
    from active_learning.acquisition import INTEGRATED_POOL
    model = next((m.model for m in ens.members if hasattr(getattr(m.model, "inner", m.model), "posterior_cov")),
                 None)
    if model is None:
        raise ToolkitError(f"--rule {rule} needs the GP member in the ensemble. Fix: --members ...,gp_stack")
    gp = getattr(model, "inner", model)   # a GP that learns a ratio metric through its sign (models.SignedRatio)
    sub = np.sort(rng.choice(len(x_scaled), min(INTEGRATED_POOL, len(x_scaled)), replace=False))
    x_sub = np.asarray(x_scaled)[sub]
    with torch.no_grad():
        xs = torch.as_tensor(x_sub)
        cov = gp.posterior_cov(xs, xs).numpy()
        noise = gp.observation_noise().numpy()
        sensitivity = np.ones((cov.shape[0], len(sub)))
        if gp is not model:   # those metrics' covariance is in the GP's u space: what a unit of it is worth in
            cols = list(model.columns)   # the model space (var_model / var_u, both from the GP at each design)
            mu, logvar = gp.mean_logvar(xs)                  # one GP pass for both spaces
            var_model = model.to_model_space(mu, logvar)[1][:, cols].double().exp()
            sensitivity[cols] = (var_model / logvar[:, cols].double().exp()).T.numpy()
    return sub[select(rule, x_sub, mean[sub], std[sub], batch=batch, rng=rng, p_ok=p_ok[sub], gp_cov=(cov, noise),
                      sensitivity=sensitivity, uniform=n_uniform)]
