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
