"""core.freshness: the one mtime rule the pipeline's staleness check and the ensemble's warnings share."""
import os

from core.freshness import file_label, modified_after


def test_only_existing_files_written_after_the_reference_count(tmp_path):
    ref, old, new = tmp_path / "model.pth", tmp_path / "source" / "features.csv", tmp_path / "target" / "targets.csv"
    for p, t in ((ref, 2_000), (old, 1_000), (new, 3_000)):
        p.parent.mkdir(exist_ok=True)
        p.write_text("x")
        os.utime(p, (t, t))
    assert modified_after(ref, [old, new, tmp_path / "gone.csv"]) == [new]
    assert modified_after(ref, {"source_x": old, "target_y": new}) == [new]      # a dict by role, as the loader gives
    assert [file_label(f) for f in modified_after(ref, [new])] == ["target/targets.csv"]   # the domain shows


def test_data_changed_by_content_with_or_without_roles(tmp_path):
    from core.freshness import data_changed, data_digests
    a, b = tmp_path / "source" / "targets.csv", tmp_path / "target" / "targets.csv"
    for f, text in ((a, "y\n1\n"), (b, "y\n2\n")):
        f.parent.mkdir(exist_ok=True)
        f.write_text(text)
    ckpt = tmp_path / "m.pth"
    ckpt.write_text("")
    meta = {"data_sha256": data_digests({"source_targets": a, "target_targets": b})}
    os.utime(a, (1e10, 1e10))                                               # touched: the same bytes
    assert data_changed(meta, ckpt, {"source_targets": a, "target_targets": b}) == []
    assert data_changed(meta, ckpt, [a, b]) == []                           # paths without roles (the harness)
    b.write_text("y\n3\n")
    assert data_changed(meta, ckpt, {"source_targets": a, "target_targets": b}) == [b]
    assert data_changed(meta, ckpt, [a, b]) == [b]
    assert data_changed({}, ckpt, [a]) == [a]                               # an older checkpoint: by time
