"""Losses: reference comparisons, properties, bad inputs, gradcheck (tiny float64 tensors)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from torch import nn

from core.errors import ToolkitError
from losses import batch_r2, coral_loss, heteroscedastic_nll, l2sp_penalty, varying_r2


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------- references
def test_nll_matches_torch_gaussian_nll():
    mu, logvar, y = _rand(16, 3, seed=1), 0.5 * _rand(16, 3, seed=2), _rand(16, 3, seed=3)
    ref = F.gaussian_nll_loss(mu, y, torch.exp(logvar), full=False, eps=1e-12, reduction="mean")
    assert torch.allclose(heteroscedastic_nll(mu, logvar, y), ref, atol=1e-6, rtol=0)
    ref_sum = F.gaussian_nll_loss(mu, y, torch.exp(logvar), full=False, eps=1e-12, reduction="sum")
    assert torch.allclose(heteroscedastic_nll(mu, logvar, y, reduction="sum"), ref_sum, atol=1e-6, rtol=0)
    ref_none = F.gaussian_nll_loss(mu, y, torch.exp(logvar), full=False, eps=1e-12, reduction="none")
    got_none = heteroscedastic_nll(mu, logvar, y, reduction="none")
    assert got_none.shape == (16, 3)
    assert torch.allclose(got_none, ref_none, atol=1e-6, rtol=0)


def test_r2_matches_sklearn_per_column():
    y = _rand(20, 4, seed=4)
    y_hat = y + 0.3 * _rand(20, 4, seed=5)
    ref = r2_score(y.numpy(), y_hat.numpy(), multioutput="raw_values")
    got = batch_r2(y, y_hat, reduction="none")
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batch_r2(y, y_hat).item(), ref.mean(), atol=1e-6, rtol=0)


def _coral_numpy(a, b, unbiased=True):
    def cov(x):
        xc = x - x.mean(axis=0, keepdims=True)
        return xc.T @ xc / (len(x) - 1 if unbiased else len(x))
    d = a.shape[1]
    return float(np.sum((cov(a) - cov(b)) ** 2) / (4 * d * d))


@pytest.mark.parametrize("unbiased", [True, False])
def test_coral_matches_numpy(unbiased):
    a, b = _rand(12, 5, seed=6), 2.0 * _rand(7, 5, seed=7) + 1.0   # different batch sizes
    got = coral_loss(a, b, unbiased=unbiased).item()
    assert got == pytest.approx(_coral_numpy(a.numpy(), b.numpy(), unbiased), abs=1e-6)
    # numpy's own covariance as a second, independent reference
    ref = np.sum((np.cov(a.numpy(), rowvar=False, ddof=int(unbiased))
                  - np.cov(b.numpy(), rowvar=False, ddof=int(unbiased))) ** 2) / (4 * 25)
    assert got == pytest.approx(ref, abs=1e-6)


def test_seed_positional_signatures():
    a, b = _rand(8, 3, seed=8), _rand(8, 3, seed=9)
    assert coral_loss(a, b, True, 1e-6) == coral_loss(a, b)
    assert batch_r2(a, b, 1e-8) == batch_r2(a, b)
    assert heteroscedastic_nll(a, b, a, "sum") == heteroscedastic_nll(a, b, a, reduction="sum")


# ---------------------------------------------------------------- properties
def test_coral_properties():
    a, b = _rand(10, 4, seed=10), 3.0 * _rand(9, 4, seed=11)
    assert coral_loss(a, a).item() == pytest.approx(0.0, abs=1e-12)
    assert coral_loss(a, b).item() == pytest.approx(coral_loss(b, a).item(), abs=1e-12)
    assert coral_loss(a, b).item() > 0                                   # control: differs
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert coral_loss(a[perm], b).item() == pytest.approx(coral_loss(a, b).item(), abs=1e-10)
    shift = _rand(1, 4, seed=12) * 5
    assert coral_loss(a + shift, b + shift).item() == pytest.approx(coral_loss(a, b).item(), abs=1e-10)
    assert coral_loss(a + shift, b).item() == pytest.approx(coral_loss(a, b).item(), abs=1e-10)
    for s in range(5):
        assert coral_loss(_rand(6, 3, seed=20 + s), _rand(6, 3, seed=40 + s)).item() >= 0


def test_r2_perfect_and_mean_prediction():
    y = _rand(15, 3, seed=13)
    assert torch.allclose(batch_r2(y, y.clone(), reduction="none"), torch.ones(3, dtype=y.dtype))
    mean_pred = y.mean(dim=0, keepdim=True).expand_as(y)
    assert torch.allclose(batch_r2(y, mean_pred, reduction="none"), torch.zeros(3, dtype=y.dtype), atol=1e-6)
    assert batch_r2(y, -y).item() < 0                                    # worse than the mean


def test_r2_one_dimensional_is_one_column():
    y = _rand(10, seed=14)
    y_hat = y + 0.1 * _rand(10, seed=15)
    assert batch_r2(y, y_hat, reduction="none").shape == (1,)
    assert batch_r2(y, y_hat).item() == pytest.approx(r2_score(y.numpy(), y_hat.numpy()), abs=1e-6)


def test_training_r2_leaves_out_a_metric_that_is_constant_in_the_batch():
    y = _rand(32, 3, seed=17).float()
    y_hat = y + 0.1 * _rand(32, 3, seed=18).float()
    assert varying_r2(y, y_hat).item() == pytest.approx(batch_r2(y, y_hat).item(), abs=1e-6)   # all vary: the same
    const = y.clone()
    const[:, 1] = 0.3                          # one value in every row (a standardised constant metric), as float32
    const_hat = y_hat.clone()
    const_hat[:, 1] = 0.2
    assert batch_r2(const, const_hat).item() < -1e5                    # the seed's eps: a loss swamping the others
    r2_others = batch_r2(const[:, [0, 2]], const_hat[:, [0, 2]]).item()
    assert varying_r2(const, const_hat).item() == pytest.approx(r2_others, abs=1e-6)
    assert varying_r2(torch.full((8, 2), 0.7), torch.zeros(8, 2)).item() == 1.0     # nothing varies: no R2 term


def test_nll_reduction_none_keeps_shape_and_prefers_right_variance():
    y, mu = _rand(50, 2, seed=16), torch.zeros(50, 2, dtype=torch.float64)
    nll_right = heteroscedastic_nll(mu, torch.zeros_like(mu), y)             # var 1 ~ true var
    nll_wrong = heteroscedastic_nll(mu, torch.full_like(mu, 4.0), y)         # var e^4
    assert nll_right < nll_wrong


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2)).double()


def test_l2sp_zero_with_zero_grad_at_pretrained():
    model = _tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pen = l2sp_penalty(model, state)
    assert pen.item() == 0.0
    pen.backward()
    for p in model.parameters():
        assert torch.count_nonzero(p.grad) == 0


def test_l2sp_value_grad_and_param_names():
    model = _tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[2].weight.add_(0.5)                       # 4*2 entries moved by 0.5
    assert l2sp_penalty(model, state).item() == pytest.approx(8 * 0.25)
    assert l2sp_penalty(model, state, param_names=["0.weight"]).item() == 0.0
    assert l2sp_penalty(model, state, param_names=["2.weight"]).item() == pytest.approx(2.0)
    model[2].weight.requires_grad_(False)               # default = trainable params only
    assert l2sp_penalty(model, state).item() == 0.0
    model[2].weight.requires_grad_(True)
    pen = l2sp_penalty(model, state, param_names=["2.weight"])
    pen.backward()
    assert torch.allclose(model[2].weight.grad, torch.full_like(model[2].weight, 1.0))  # 2(w-w0)
    assert l2sp_penalty(model, state, param_names=[]).item() == 0.0


# ---------------------------------------------------------------- bad inputs
_x = torch.zeros(4, 2)
_col = torch.zeros(4, 1)
_vec = torch.zeros(4)

BAD = [
    ("nll (N,) vs (N,1)", lambda: heteroscedastic_nll(_col, _col, _vec), "reshape(-1, 1)"),
    ("nll logvar shape", lambda: heteroscedastic_nll(_x, _col, _x), "logvar has shape"),
    ("nll reduction", lambda: heteroscedastic_nll(_x, _x, _x, reduction="avg"), "reduction"),
    ("nll int tensor", lambda: heteroscedastic_nll(_x, _x, _x.long()), "floating-point"),
    ("nll numpy input", lambda: heteroscedastic_nll(_x.numpy(), _x, _x), "torch.Tensor"),
    ("nll empty", lambda: heteroscedastic_nll(_x[:0], _x[:0], _x[:0]), "empty"),
    ("r2 (N,1) vs (N,)", lambda: batch_r2(_col, _vec), "reshape(-1, 1)"),
    ("r2 (N,) vs (N,1)", lambda: batch_r2(_vec, _col), "reshape(-1)"),
    ("r2 one row", lambda: batch_r2(_x[:1], _x[:1]), "at least 2 rows"),
    ("r2 3-d", lambda: batch_r2(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2)), "(N, D)"),
    ("r2 reduction", lambda: batch_r2(_x, _x, reduction="sum"), "reduction"),
    ("coral width", lambda: coral_loss(torch.zeros(4, 3), torch.zeros(4, 2)), "same feature width"),
    ("coral one row", lambda: coral_loss(torch.zeros(1, 3), torch.zeros(4, 3)), ">= 2 rows"),
    ("coral 1-d", lambda: coral_loss(_vec, _vec), "(N, d)"),
    ("coral eps", lambda: coral_loss(_x, _x, eps=0.0), "eps"),
    ("l2sp unknown name", lambda: l2sp_penalty(_tiny_model(), _tiny_model().state_dict(),
                                               param_names=["2.wieght"]), "did you mean '2.weight'"),
    ("l2sp string names", lambda: l2sp_penalty(_tiny_model(), _tiny_model().state_dict(),
                                               param_names="2.weight"), "list of names"),
    ("l2sp missing state", lambda: l2sp_penalty(_tiny_model(), {}), "no entry"),
    ("l2sp shape", lambda: l2sp_penalty(_tiny_model(), {**_tiny_model().state_dict(),
                                                        "0.bias": torch.zeros(5)}), "shape"),
]


@pytest.mark.parametrize("call,needle", [(c, n) for _, c, n in BAD], ids=[i for i, _, _ in BAD])
def test_bad_inputs_raise_clear_valueerror(call, needle):
    with pytest.raises(ValueError) as info:
        call()
    assert isinstance(info.value, ToolkitError)
    assert needle in str(info.value)


# ---------------------------------------------------------------- gradcheck (float64)
def _req(t):
    return t.clone().requires_grad_(True)


def test_gradcheck_nll():
    mu, logvar, y = _req(_rand(4, 2, seed=30)), _req(0.3 * _rand(4, 2, seed=31)), _req(_rand(4, 2, seed=32))
    assert torch.autograd.gradcheck(heteroscedastic_nll, (mu, logvar, y))


def test_gradcheck_r2():
    y, y_hat = _req(_rand(5, 2, seed=33)), _req(_rand(5, 2, seed=34))
    assert torch.autograd.gradcheck(lambda a, b: batch_r2(a, b, reduction="none"), (y, y_hat))


def test_gradcheck_coral():
    a, b = _req(_rand(5, 3, seed=35)), _req(_rand(4, 3, seed=36))
    assert torch.autograd.gradcheck(coral_loss, (a, b))


def test_gradcheck_l2sp():
    class _Holder(nn.Module):
        """Presents an input tensor as the module's only parameter, so gradcheck can vary it."""

        def __init__(self, w):
            super().__init__()
            self._w = w

        def named_parameters(self, *args, **kwargs):
            yield "w", self._w

    w0 = {"w": _rand(3, 2, seed=37)}
    w = _req(_rand(3, 2, seed=38))
    assert torch.autograd.gradcheck(lambda t: l2sp_penalty(_Holder(t), w0), (w,))
