"""core.code_record: which source files a stage is made of, and staleness when one changes."""
import pytest

import pipeline
from core import code_record as cr


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A tiny toolkit tree: training.a imports training.b (and torch, config: not recorded)."""
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "a.py").write_text("import torch\nimport config\nfrom training.b import x\n")
    (tmp_path / "training" / "b.py").write_text("x = 1\n\ndef late():\n    from models import m  # noqa\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("from models.m import y\n")
    (tmp_path / "models" / "m.py").write_text("y = 2\n")
    (tmp_path / "config.py").write_text("EPOCHS = 3\n")
    monkeypatch.setattr(cr, "ROOT", tmp_path)
    return tmp_path


def test_record_follows_imports_transitively_and_skips_config_and_third_party(tree):
    record = cr.code_record("training.a")
    assert sorted(record) == ["models/__init__.py", "models/m.py", "training/__init__.py", "training/a.py",
                              "training/b.py"]
    assert all(len(h) == cr.HASH_CHARS for h in record.values())


def test_changed_files_names_the_edited_and_the_newly_imported_file(tree):
    saved = cr.code_record("training.a")
    assert cr.changed_files(saved, "training.a") == []
    (tree / "config.py").write_text("EPOCHS = 4  # settings live in the snapshot, not the code record\n")
    assert cr.changed_files(saved, "training.a") == []
    (tree / "models" / "m.py").write_text("y = 3\n")
    assert cr.changed_files(saved, "training.a") == ["models/m.py"]
    (tree / "training" / "c.py").write_text("z = 0\n")
    (tree / "training" / "b.py").write_text("from training.c import z\nx = 1\n")
    assert cr.changed_files(saved, "training.a") == ["models/__init__.py", "models/m.py", "training/b.py",
                                                     "training/c.py"]


def test_unknown_module_is_an_error(tree):
    with pytest.raises(ValueError, match="not a toolkit module"):
        cr.code_record("numpy")


def test_real_stages_record_their_own_entry_point_and_the_shared_loop():
    record = cr.code_record("fine_tune.fine_tune")
    assert {"fine_tune/fine_tune.py", "training/loop.py", "models/dual_head.py", "losses/loss_function.py"} \
        <= set(record)
    assert "training/train_align_coral.py" not in record and "config.py" not in record


def test_pipeline_retrains_a_stage_whose_code_changed(tmp_path, monkeypatch):
    from tests.synthetic import write_dataset
    data = write_dataset(tmp_path / "data", n_source=120, n_target=80)
    args = ["--data-dir", str(data), "--results-dir", str(tmp_path / "res"), "--device", "cpu", "--quiet",
            "--set", "HIDDEN_DIM=8", "--set", "NUM_LAYERS=2", "--dry-run"]
    pipeline.main(args)
    _, settings = pipeline.parse_args(args)
    assert [r for *_, r in pipeline.plan(settings, force=False, dry_run=True)] == [None] * 6
    from training import staleness
    real = staleness.changed_files
    monkeypatch.setattr(staleness, "changed_files", lambda saved, module:
                        ["fine_tune/fine_tune.py"] if module == "fine_tune.fine_tune" else real(saved, module))
    assert [r for *_, r in pipeline.plan(settings, force=False, dry_run=True)] == \
        [None, None, None, "code changed: fine_tune/fine_tune.py", None, None]
    monkeypatch.setattr(staleness, "changed_files", lambda saved, module:
                        ["training/loop.py"] if module.startswith("training.train") else real(saved, module))
    assert [r for *_, r in pipeline.plan(settings, force=False, dry_run=True)] == \
        ["code changed: training/loop.py", "after baseline"] * 3   # baseline, align; target-only, fine-tune; pooled, GP
    read = staleness.read_checkpoint_meta
    monkeypatch.setattr(staleness, "read_checkpoint_meta",
                        lambda path: {k: v for k, v in read(path).items() if k != "code"})
    reasons = [r for *_, r in pipeline.plan(settings, force=False, dry_run=True)]
    assert all(r.startswith("no code record") for r in reasons[0::2])
    assert reasons[1::2] == ["after baseline"] * 3


def test_toolkit_uses_absolute_imports_only():
    # code_record follows absolute imports; a relative one would leave its target out of the record
    import ast
    offenders = []
    for top in sorted(cr.TOOLKIT_TOP_LEVEL):
        base = cr.ROOT / top
        for path in sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]:
            if path.is_file() and any(isinstance(n, ast.ImportFrom) and n.level
                                      for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))):
                offenders.append(path.relative_to(cr.ROOT).as_posix())
    assert offenders == [], f"relative imports (write them absolute, as the rest of the toolkit): {offenders}"
