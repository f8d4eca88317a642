"""The data doctor: clean fixtures and shipped datasets exit 0; every kind of problem is one line naming the file
and exits 2."""

import numpy as np
import pytest
from PIL import Image

from dataset_layouts import make_ade20k, make_cityscapes, make_voc
from segbench.cli import main
from segbench.data import default_root
from segbench.data.doctor import check


def _check(name, root, capsys, *extra):
    code = main(["data", "check", name, "--data-root", str(root), *extra])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("name, make", [("voc", make_voc), ("cityscapes", make_cityscapes), ("ade20k", make_ade20k)])
def test_clean_fixtures_exit_0_with_counts_and_frequencies(tmp_path, capsys, name, make):
    code, out = _check(name, make(tmp_path / name), capsys)
    assert code == 0 and "problem" not in out and f"{name}: clean; 6 image(s) checked" in out
    assert "images: 4 read; sizes (WxH): 48x32 (4)" in out and "stored label values found:" in out
    assert "pixels %" in out


def test_every_problem_is_one_line_and_exit_2(tmp_path, capsys):
    base = make_voc(tmp_path / "voc", n_train=6)
    masks = sorted((base / "SegmentationClass").glob("2007_*.png"))
    masks[0].unlink()  # image without mask
    (base / "JPEGImages" / f"{masks[1].stem}.jpg").unlink()  # mask without image
    (base / "JPEGImages" / f"{masks[2].stem}.jpg").write_bytes(b"not a jpeg")  # corrupt
    Image.fromarray(np.full((32, 48), 40, np.uint8)).save(masks[3])  # value outside the table
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks[4])  # wrong size
    with open(base / "ImageSets" / "Segmentation" / "train.txt", "a") as f:
        f.write("2099_000000\n")  # listed, no files
    code, out = _check("voc", base, capsys, "--split", "train")
    problems = [line for line in out.splitlines() if "problem:" in line]
    assert code == 2 and len(problems) == 6, out
    assert any(f"{masks[0].stem}.jpg: image without a mask" in p for p in problems)
    assert any(f"{masks[1].name}: mask without an image" in p for p in problems)
    assert any(f"{masks[2].stem}.jpg: not an image, or a corrupt or truncated one" in p for p in problems)
    assert any(f"{masks[3].name}: voc label values {{40}}" in p for p in problems)
    assert any(f"{masks[4].name}: mask is 10x10 but its image is 48x32" in p for p in problems)
    assert any("'2099_000000' is listed but has neither" in p for p in problems)
    assert "voc: 6 problem(s)" in out


def test_wrong_root_is_one_problem(tmp_path, capsys):
    code, out = _check("ade20k", tmp_path, capsys)
    assert code == 2 and out.count("problem:") == 1 and "missing images/" in out


@pytest.mark.parametrize("name", ["isbi2012", "camvid", "balloon"])
def test_shipped_datasets_are_clean(name):
    if default_root(name) is None:
        pytest.skip(f"needs the {name} data in $SEGBENCH_DATA/{name} or ../shared/data/{name} "
                    "(README: Datasets and protocol)")
    lines = []
    assert check(name, log=lines.append) == [], "\n".join(lines)
    assert lines[-1].startswith(f"{name}: clean;")
