"""The stage registry (core/stages.py): one declaration per stage, read by every consumer (issue 19)."""
import importlib

import pytest

import config
import pipeline
from core import stages
from core.errors import ToolkitError
from core.settings import resolve, snapshot
from inference.members import parse_members
from inference.predict import Ensemble
from inverse.forward import canonical_model_type, model_types
from models import MODEL_CLASSES
from training.staleness import staleness

TINY = ["--set", "HIDDEN_DIM=8", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=8", "--set", "POOLED_NUM_LAYERS=2", "--quiet"]


def test_every_setting_is_read_by_a_stage_or_declared_not_read():
    """A new config.py key must be classified: listed in some stage's reads, or in NOT_STAGE_SETTINGS."""
    keys = set(snapshot(config))
    read = set().union(*(s.reads for s in stages.STAGES.values()))
    assert keys - read - stages.NOT_STAGE_SETTINGS == set()
    assert (read | stages.NOT_STAGE_SETTINGS) - keys == set()     # and nothing declared that config lacks


def test_each_stage_is_complete_and_keeps_the_seed_file_names():
    settings = resolve(config, {})
    names = {n: stages.checkpoint_path(settings, n).name for n in stages.STAGES}
    assert names == {"baseline": "5t_opamp_baseline_model.pth", "align_hetero": "5t_opamp_align_hetero_lambda0.050.pth",
                     "target_only": "5t_opamp_target_only_hetero.pth", "dualhead": "5t_opamp_dualhead_finetuned.pth",
                     "pooled": "5t_opamp_pooled_flag.pth", "gp_stack": "5t_opamp_gp_stack.pth"}
    for s in stages.STAGES.values():
        assert callable(importlib.import_module(s.module).main) and set(s.model_class if isinstance(s.model_class, tuple) else [s.model_class]) <= set(MODEL_CLASSES)
        assert s.parent is None or list(stages.STAGES).index(s.parent) < list(stages.STAGES).index(s.name)


@pytest.mark.parametrize("old, new", [("align_coral", "align_hetero"), ("train_align_coral", "align_hetero"),
                                      ("target_hetero", "target_only"), ("target_only_hetero", "target_only"),
                                      ("pooled_mlp", "pooled"), ("pooled_flag", "pooled"), ("dualhead_b", "dualhead")])
def test_old_names_are_accepted_everywhere_a_name_is(old, new):
    assert stages.canonical(old) == new
    assert parse_members(old) == [new] and canonical_model_type(old) == new


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ToolkitError, match="did you mean align_hetero"):
        stages.canonical("align_hetro")
    with pytest.raises(ToolkitError, match="ensemble member 'baseline'"):
        parse_members("baseline")                        # a stage, but not a member
    with pytest.raises(ValueError, match="taken"):
        stages.register(stages.Stage("x", "tests.toy_stage", "x.pth", "MLP", frozenset(), aliases=("align_coral",)))


@pytest.fixture
def toy_stage():
    """The whole of adding a stage: tests/toy_stage.py plus this one registry entry."""
    stage = stages.register(stages.Stage(
        "toy", "tests.toy_stage", "{opamp}_toy_batch{BATCH_SIZE}.pth", "MLP", stages.COMMON | {"BATCH_SIZE"},
        member=True, optional=True, label="toy target-only MLP", aliases=("toy_mlp",)))
    yield stage
    stages.unregister("toy")


def test_a_registered_stage_is_run_by_the_pipeline_fused_and_checked_for_staleness(toy_stage, tiny_data, tmp_path):
    data, res = tiny_data(200, 100), tmp_path / "res"
    args = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", *TINY, "--dry-run"]
    out = pipeline.main(args + ["--members", "target_only,toy_mlp"])
    assert (res / "5t_opamp_toy_batch64.pth").is_file() and set(out["ensemble"]["members"]) == {"target_only", "toy"}
    assert Ensemble.load(res, "5t_opamp").params.members == ["target_only", "toy"]
    assert "toy" in model_types() and canonical_model_type("toy") == "toy"
    _, settings = pipeline.parse_args(args)

    def reason(settings, **kw):
        loaded = pipeline.get_data_and_scalers(**pipeline.data_kwargs_from_settings(settings))
        return staleness(settings, "toy", loaded["split"], loaded["files"].values(), dry_run=True, **kw)
    assert reason(settings) is None                                             # up to date
    assert [n for n, *_ in pipeline.plan(settings, force=False, dry_run=True, members="target_only,toy")][-1] == "toy"
    assert "toy" not in [n for n, *_ in pipeline.plan(settings, force=False, dry_run=True)]   # optional: not asked
    assert reason(dict(settings, L2SP_LAMBDA=0.5)) is None                     # a setting it does not read
    assert reason(dict(settings, LEARNING_RATE=1e-2)) == "settings changed: LEARNING_RATE"   # one it reads
    assert reason(dict(settings, BATCH_SIZE=32)) == "no checkpoint"           # its file name follows BATCH_SIZE


def test_the_toy_stage_is_gone_after_the_test():
    assert "toy" not in stages.STAGES
    with pytest.raises(ToolkitError):
        parse_members("toy")


def test_library_default_members_equal_config():
    """inference.members.DEFAULT_MEMBERS (what library callers get) is config.ENSEMBLE_MEMBERS (what the CLI uses)."""
    import config
    from inference.members import DEFAULT_MEMBERS, parse_members
    assert list(DEFAULT_MEMBERS) == parse_members(config.ENSEMBLE_MEMBERS)
