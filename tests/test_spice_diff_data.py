"""spice.diff_data: rows matched by design, changes counted per metric, bad input in one line."""
import pandas as pd
import pytest

from core.errors import ToolkitError
from spice import diff_data


def _write(root, feats, targets):
    d = root / "c" / "target"
    d.mkdir(parents=True)
    pd.DataFrame(feats).to_csv(d / "features.csv", index=False)
    pd.DataFrame(targets).to_csv(d / "targets.csv", index=False)


def test_counts_changed_rows_per_metric_matching_designs_not_positions(tmp_path, capsys):
    feats = {"w": [1.0, 2.0, 2.0, 3.0], "l": [1.0, 1.0, 1.0, 2.0]}
    _write(tmp_path / "old", feats, {"gain": [10.0, 20.0, 21.0, 30.0], "phase_margin": [60.0, 70.0, 71.0, 80.0]})
    # new: rows in another order, one gain changed by 5 %, one phase margin by 2 deg, design w=1 gone.
    _write(tmp_path / "new", {"w": [3.0, 2.0, 2.0], "l": [2.0, 1.0, 1.0]},
           {"gain": [31.5, 20.0, 21.0], "phase_margin": [80.0, 72.0, 71.0]})
    rows = {r["metric"]: r for r in diff_data.diff_folder(tmp_path / "old/c/target", tmp_path / "new/c/target", 0.01, 1.0)}
    assert rows["gain"]["common rows"] == 3 and rows["gain"]["changed"] == 1
    assert rows["phase_margin"]["changed"] == 1          # 70 -> 72 deg; the repeated design matched 1:1
    assert rows["gain"]["only in old"] == 1 and rows["gain"]["only in new"] == 0
    out = tmp_path / "diff.md"
    diff_data.main(["--old", str(tmp_path / "old"), "--new", str(tmp_path / "new"), "--out", str(out)])
    assert "| gain | 3 | 1 | 33.3 |" in out.read_text()


def test_no_common_folder_is_one_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ToolkitError, match="no <circuit>/<domain> folder is in both"):
        diff_data.main(["--old", str(tmp_path / "a"), "--new", str(tmp_path / "a")])


@pytest.mark.parametrize("extra, phrase", [
    (["--threshold", "-1"], "--threshold must be a number > 0"),       # counted every row as changed
    (["--pm-threshold", "nan"], "--pm-threshold must be a number > 0"),
    (["--old", "/nonexistent"], "--old /nonexistent is not a folder"),
])
def test_bad_thresholds_and_roots_are_one_line(tmp_path, extra, phrase):
    _write(tmp_path / "old", {"w": [1.0]}, {"gain": [1.0]})
    _write(tmp_path / "new", {"w": [1.0]}, {"gain": [1.0]})
    with pytest.raises(ToolkitError, match=phrase):
        diff_data.main(["--old", str(tmp_path / "old"), "--new", str(tmp_path / "new"), *extra])


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_path_where_no_file_can_be_made_is_refused_before_the_work(tmp_path):
    _write(tmp_path / "old", {"w": [1.0]}, {"gain": [1.0]})
    with pytest.raises(ToolkitError, match="no file can be written in /proc"):
        diff_data.main(["--old", str(tmp_path / "old"), "--new", str(tmp_path / "old"), "--out", "/proc/x.md"])
