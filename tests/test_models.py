"""Model classes: shapes, input validation, registry, backbone transfer (tiny dims)."""
import pytest
import torch

from core.errors import ToolkitError
from models import MODEL_CLASSES, AlignHeteroMLP, DualHeadMLP, MLP

NETS = {k: v for k, v in MODEL_CLASSES.items() if k not in ("MDN", "DeepEnsemble", "SignedRatio")}   # x -> y networks
# (the MDN maps y -> x; a DeepEnsemble and a SignedRatio are built from networks, tested on their own)
from models.model_utils import load_backbone_from_trained_mlp

TINY = dict(hidden_dim=8, num_layers=2)
N, D_IN, D_OUT = 5, 4, 3


def _x(n=N, d=D_IN, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _outputs(model, x):
    out = model(x)
    return out if isinstance(out, tuple) else (out,)


def test_registry_names_match_classes():
    from models.mdn import MDN
    from models.gp import StackedGP
    from models.deep_ensemble import DeepEnsemble
    from models.signed_ratio import SignedRatio
    assert MODEL_CLASSES == {"MLP": MLP, "AlignHeteroMLP": AlignHeteroMLP, "DualHeadMLP": DualHeadMLP, "MDN": MDN,
                             "StackedGP": StackedGP, "DeepEnsemble": DeepEnsemble, "SignedRatio": SignedRatio}
    for name, cls in MODEL_CLASSES.items():
        assert cls.__name__ == name


def test_mlp_shapes_and_seed_positional_call(seeded):
    assert MLP(D_IN, D_OUT, **TINY)(_x()).shape == (N, D_OUT)
    default = MLP(D_IN, D_OUT)                    # seed: MLP(input_dim, output_dim)
    assert default.constructor_kwargs() == dict(input_dim=D_IN, output_dim=D_OUT, hidden_dim=512,
                                                 num_layers=6, dropout=0.1, activation="silu")
    assert len(default.backbone) == 6
    with pytest.raises(TypeError):
        MLP(D_IN, D_OUT, 8)                       # hidden_dim is keyword-only


def test_align_hetero_outputs_and_logvar_clamp(seeded):
    m = AlignHeteroMLP(input_dim=D_IN, output_dim=D_OUT, **TINY)
    mu, logvar, feat = m(_x())
    assert mu.shape == (N, D_OUT) and logvar.shape == (N, D_OUT) and feat.shape == (N, 8)
    with torch.no_grad():
        m.logvar_head.bias.fill_(1e3)
    _, logvar, _ = m(_x())
    assert torch.all(logvar == AlignHeteroMLP.LOGVAR_MAX)


def test_align_features_are_backbone_output_in_eval():
    m = AlignHeteroMLP(D_IN, D_OUT, **TINY).eval()
    _, _, feat = m(_x())
    assert torch.equal(feat, m.backbone(_x()))


def test_dual_head_domains(seeded):
    m = DualHeadMLP(D_IN, D_OUT, **TINY).eval()
    y_a, y_b = m(_x(), domain="A"), m(_x(), domain="B")
    assert y_a.shape == y_b.shape == (N, D_OUT)
    assert not torch.allclose(y_a, y_b)                          # separate heads
    assert torch.equal(m(_x()), y_b)                             # default domain is B
    with pytest.raises(ValueError, match="domain must be 'A'"):
        m(_x(), domain="C")


def test_dual_head_variance_head_is_optional(seeded):
    plain = DualHeadMLP(D_IN, D_OUT, **TINY).eval()
    mu, logvar = plain.predict_B(_x())
    assert logvar is None and torch.equal(mu, plain(_x())) and not plain.has_variance
    het = DualHeadMLP(D_IN, D_OUT, **TINY, logvar_head=True).eval()
    with torch.no_grad():
        het.logvar_B.bias.fill_(50.0)                              # runaway head: clamped like AlignHeteroMLP
    mu, logvar = het.predict_B(_x())
    assert torch.equal(mu, het(_x(), domain="B")) and torch.all(logvar == AlignHeteroMLP.LOGVAR_MAX)
    assert DualHeadMLP(**het.constructor_kwargs()).has_variance    # the checkpoint rebuilds the head
    with pytest.raises(ToolkitError, match="logvar_head must be True or False"):
        DualHeadMLP(D_IN, D_OUT, **TINY, logvar_head="yes")


def test_mean_and_variance_reads_every_model_class():
    from models.outputs import has_variance, mean_and_variance
    torch.manual_seed(0)
    cases = [(AlignHeteroMLP(D_IN, D_OUT, **TINY).eval(), True), (MLP(D_IN, D_OUT, **TINY).eval(), False),
             (DualHeadMLP(D_IN, D_OUT, **TINY).eval(), False),
             (DualHeadMLP(D_IN, D_OUT, **TINY, logvar_head=True).eval(), True)]
    for model, hetero in cases:
        mean, var = mean_and_variance(model, _x())
        assert has_variance(model) is hetero and (var is not None) is hetero
        if isinstance(model, AlignHeteroMLP):
            mu, logvar, _ = model(_x())
            assert torch.equal(mean, mu) and torch.equal(var, logvar.exp())
        elif isinstance(model, DualHeadMLP):
            mu, logvar = model.predict_B(_x())
            assert torch.equal(mean, mu) and (not hetero or torch.equal(var, logvar.exp()))
        else:
            assert torch.equal(mean, model(_x()))


@pytest.mark.parametrize("cls", list(NETS.values()), ids=list(NETS))
def test_input_shape_errors(cls):
    m = cls(D_IN, D_OUT, **TINY)
    with pytest.raises(ToolkitError, match=r"expects input of shape \(N, 4\), got \(4,\).*unsqueeze"):
        m(torch.zeros(D_IN))
    with pytest.raises(ToolkitError, match=r"expects input of shape \(N, 4\), got \(2, 5\).*x_cols"):
        m(torch.zeros(2, D_IN + 1))
    with pytest.raises(ToolkitError, match="torch.Tensor"):
        m([[0.0] * D_IN])


@pytest.mark.parametrize("cls", list(NETS.values()), ids=list(NETS))
def test_rebuild_from_constructor_kwargs(cls):
    m = cls(D_IN, D_OUT, **TINY, dropout=0.0, activation="relu")
    twin = MODEL_CLASSES[type(m).__name__](**m.constructor_kwargs())
    assert twin.constructor_kwargs() == m.constructor_kwargs()
    twin.load_state_dict(m.state_dict(), strict=True)
    for a, b in zip(_outputs(m.eval(), _x()), _outputs(twin.eval(), _x())):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(input_dim=0, output_dim=3), "input_dim must be a positive int"),
    (dict(input_dim=4, output_dim=3, num_layers=0), "num_layers"),
    (dict(input_dim=4, output_dim=3, dropout=1.0), "dropout"),
    (dict(input_dim=4, output_dim=3, activation="tanh"), "activation"),
])
def test_bad_constructor_args(kwargs, needle):
    with pytest.raises(ToolkitError, match=needle):
        MLP(**kwargs)


def test_last_backbone_layer_is_addressable():
    m = DualHeadMLP(D_IN, D_OUT, **TINY)
    names = m.backbone.last_layer_param_names()
    assert names == ["backbone.blocks.1.linear.weight", "backbone.blocks.1.linear.bias"]
    params = dict(m.named_parameters())
    assert params[names[0]] is m.backbone.last_linear.weight
    assert m.backbone[-1].linear is m.backbone.last_linear
    assert len(m.backbone.linears) == 2


@pytest.mark.parametrize("cls,heads", [(AlignHeteroMLP, ["mu_head"]),
                                       (DualHeadMLP, ["head_A", "head_B"]), (MLP, ["head"])])
def test_load_backbone_copies_exactly(cls, heads, seeded):
    src = MLP(D_IN, D_OUT, **TINY)
    torch.manual_seed(1)
    dst = cls(D_IN, D_OUT, **TINY)
    assert not torch.equal(dst.backbone.last_linear.weight, src.backbone.last_linear.weight)  # control
    fresh_logvar = dst.logvar_head.weight.clone() if hasattr(dst, "logvar_head") else None
    assert load_backbone_from_trained_mlp(src, dst) is dst
    for key, value in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[key], value)
    for head in heads:
        for key, value in src.head.state_dict().items():
            assert torch.equal(getattr(dst, head).state_dict()[key], value)
    if fresh_logvar is not None:
        assert torch.equal(dst.logvar_head.weight, fresh_logvar)  # logvar head untouched
    with torch.no_grad():                                          # copied, not shared
        src.backbone.last_linear.weight.add_(1.0)
    assert not torch.equal(dst.backbone.last_linear.weight, src.backbone.last_linear.weight)


@pytest.mark.parametrize("dst_kwargs", [
    dict(input_dim=D_IN + 1, output_dim=D_OUT, hidden_dim=8, num_layers=2),
    dict(input_dim=D_IN, output_dim=D_OUT, hidden_dim=16, num_layers=2),
    dict(input_dim=D_IN, output_dim=D_OUT, hidden_dim=8, num_layers=3),
    dict(input_dim=D_IN, output_dim=D_OUT + 1, hidden_dim=8, num_layers=2),
    dict(input_dim=D_IN, output_dim=D_OUT, hidden_dim=8, num_layers=2, activation="relu"),
])
def test_load_backbone_refuses_mismatch_and_leaves_target_unchanged(dst_kwargs):
    src = MLP(D_IN, D_OUT, **TINY)
    dst = AlignHeteroMLP(**dst_kwargs)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ToolkitError) as info:
        load_backbone_from_trained_mlp(src, dst)
    msg = str(info.value)
    assert "MLP(input_dim=4" in msg and "AlignHeteroMLP(input_dim=" in msg
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_backbone_requires_an_mlp_source():
    with pytest.raises(ToolkitError, match="must be a trained models.MLP"):
        load_backbone_from_trained_mlp(DualHeadMLP(D_IN, D_OUT, **TINY), MLP(D_IN, D_OUT, **TINY))


@pytest.mark.parametrize("member", [AlignHeteroMLP, MLP], ids=["hetero", "point"])
def test_deep_ensemble_predicts_the_mixture_of_its_networks(member, tmp_path):
    """mean = average of the means; var = average of (var_k + mu_k^2) - mean^2 (a point network adds no var_k);
    the saved checkpoint rebuilds it exactly with torch.load(weights_only=True)."""
    from models.deep_ensemble import DeepEnsemble
    from models.model_utils import build_model, load_model, save_model
    from models.outputs import mean_and_variance
    torch.manual_seed(0)
    nets = [member(D_IN, D_OUT, **TINY).eval() for _ in range(3)]
    model = DeepEnsemble.of(nets).eval()
    mean, var = mean_and_variance(model, _x())
    mus = torch.stack([mean_and_variance(n, _x())[0] for n in nets])
    own = torch.stack([mean_and_variance(n, _x())[1] if n.has_variance else torch.zeros_like(mus[0]) for n in nets])
    want_var = (own + mus ** 2).mean(0) - mus.mean(0) ** 2
    assert torch.allclose(mean, mus.mean(0), atol=1e-6) and torch.allclose(var, want_var, rtol=1e-4, atol=1e-6)
    assert model.has_variance and (var > 0).all()
    path = tmp_path / "deep.pth"
    meta = save_model(model, path)
    assert meta["model_class"] == "DeepEnsemble" and meta["model_kwargs"]["size"] == 3
    assert meta["model_kwargs"]["member_class"] == member.__name__
    back = load_model(build_model(meta["model_class"], meta["model_kwargs"]), path)
    assert torch.equal(mean_and_variance(back, _x())[0], mean)


def test_deep_ensemble_bad_arguments():
    from models.deep_ensemble import DeepEnsemble
    with pytest.raises(ToolkitError, match="size must be an integer >= 1"):
        DeepEnsemble("AlignHeteroMLP", dict(input_dim=D_IN, output_dim=D_OUT, **TINY), 0)
    with pytest.raises(ToolkitError, match="member_class must be a network class"):
        DeepEnsemble("DeepEnsemble", {}, 2)
