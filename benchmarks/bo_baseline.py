"""Constrained Bayesian optimisation at the same simulation budget: the inverse benchmark's ``bo`` method.

    bo = BayesOpt(train_x_scaled, train_y_scaled, lo, hi)      # once per circuit: fits the GPs
    passed, info = bo.run(spec_model, simulate_batch, rounds=4, q=8, seed=0)

BoTorch (a benchmark-only dependency: ``pip install -e .[bench]``), the standard recipe: one exact GP
per metric (``SingleTaskGP`` with independent outputs, Matern-5/2 ARD kernel, outcomes standardised),
hyperparameters fitted once by marginal likelihood on the target-process training rows (the same B
data the forward models learn from; warm start), then per spec, per round, a batch of ``q`` designs
from ``qLogNoisyExpectedImprovement`` with one outcome constraint per goal (``lo_j - y_j <= 0``,
``y_j - hi_j <= 0``) and as objective the worst goal slack ``min_j`` (signed distance inside the goal's
bound, model space): among feasible designs it prefers the most comfortable one.  The batch is
optimised in the unit cube of the design box (``optimize_acqf``), snapped to the buildable grid by the
caller, simulated, and the simulated designs join the GP's data (hyperparameters kept) for the next round.
"""
import numpy as np
import torch

BIG_BOUND = 1e5          # model-space bounds at or beyond this are open (inverse.goals.BIG stands for +-inf)


def require_botorch():
    try:
        import botorch  # noqa: F401
    except ImportError:
        from core.errors import ToolkitError
        raise ToolkitError("the 'bo' method needs BoTorch, a benchmark-only dependency: pip install -e '.[bench]' "
                           "(or drop bo from --methods).") from None


class BayesOpt:
    def __init__(self, x_scaled: np.ndarray, y_scaled: np.ndarray, lo, hi):
        require_botorch()
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood
        self.lo, self.hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
        self.x = self._unit(torch.as_tensor(np.asarray(x_scaled), dtype=torch.float64))
        self.y = torch.as_tensor(np.asarray(y_scaled), dtype=torch.float64)
        gp = SingleTaskGP(self.x, self.y, outcome_transform=Standardize(m=self.y.shape[1]))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        self.state = gp.state_dict()

    def _unit(self, x):
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def to_scaled(self, u: torch.Tensor) -> np.ndarray:
        return (self.lo + (self.hi - self.lo) * u).numpy()

    def model(self, x_extra=None, y_extra=None):
        """The warm-started GP conditioned on the training rows plus ``x_extra`` (model space) / ``y_extra``,
        with the hyperparameters (and outcome scaling) fitted on the training rows."""
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Standardize
        x, y = self.x, self.y
        if x_extra is not None and len(x_extra):
            x = torch.cat([x, self._unit(torch.as_tensor(np.asarray(x_extra), dtype=torch.float64))])
            y = torch.cat([y, torch.as_tensor(np.asarray(y_extra), dtype=torch.float64)])
        gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=y.shape[1]))
        gp.load_state_dict(self.state)
        gp.eval()
        return gp, x

    def propose(self, spec_lo, spec_hi, *, q: int, seed: int, x_extra=None, y_extra=None) -> torch.Tensor:
        """A batch (q, D) in the unit cube for goals ``spec_lo <= y <= spec_hi`` (model space; open bounds
        beyond +-BIG_BOUND)."""
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.optim import optimize_acqf
        from botorch.sampling import SobolQMCNormalSampler
        lo = torch.as_tensor(np.asarray(spec_lo, float), dtype=torch.float64)
        hi = torch.as_tensor(np.asarray(spec_hi, float), dtype=torch.float64)
        lo_j = [j for j in range(len(lo)) if lo[j] > -BIG_BOUND]
        hi_j = [j for j in range(len(hi)) if hi[j] < BIG_BOUND]

        def slacks(z):                                            # (..., n_goals): >= 0 inside every bound
            parts = [z[..., j] - lo[j] for j in lo_j] + [hi[j] - z[..., j] for j in hi_j]
            return torch.stack(parts, dim=-1)

        constraints = [(lambda z, j=j: lo[j] - z[..., j]) for j in lo_j] + \
                      [(lambda z, j=j: z[..., j] - hi[j]) for j in hi_j]
        gp, x_all = self.model(x_extra, y_extra)
        torch.manual_seed(seed)
        acq = qLogNoisyExpectedImprovement(
            model=gp, X_baseline=x_all, objective=GenericMCObjective(lambda z, X=None: slacks(z).min(dim=-1).values),
            constraints=constraints, sampler=SobolQMCNormalSampler(torch.Size([128]), seed=seed), prune_baseline=True)
        bounds = torch.stack([torch.zeros(x_all.shape[1]), torch.ones(x_all.shape[1])]).double()
        cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=4, raw_samples=256,
                                options={"maxiter": 100, "seed": seed})
        return cand.detach()
