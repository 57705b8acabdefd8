"""`llflow evaluate`: its reports on pairs built from the bundled photos, and (with the shared data) the
published baseline numbers on sice-lowlight val."""
from __future__ import annotations

import json

import pytest

from llflow.cli import main

from .conftest import example_photos, shared_dir

# ../shared/data/README.md: PSNR RGB / SSIM grey 7×7 / LPIPS-alex, no GT-mean
PUBLISHED = {"input": (8.81, 0.293, 0.440), "histeq": (16.79, 0.750, 0.339),
             "gamma": (18.59, 0.762, 0.243), "clahe": (11.23, 0.543, 0.347)}


def test_evaluate_command_on_example_pairs(tmp_path, capsys, example_pairs) -> None:
    """The whole command on the bundled photos (one val crop each; stand-in references)."""
    n = len(example_photos())
    assert main(["evaluate", "--data", str(example_pairs / "val"), "--output", str(tmp_path), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "raw (no GT-mean)" in table and "GT-mean rescaled" in table
    summary = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert set(summary) == set(PUBLISHED)
    for name, got in summary.items():
        assert got["n"] == n
        assert {"psnr", "ssim", "lpips", "psnr_gtmean", "ssim_gtmean", "ssim_rgb", "ssim_rgb_gtmean",
                "lpips_gtmean"} <= set(got)
        assert 0 < got["psnr"] < 100 and 0 < got["ssim"] <= 1 and 0 <= got["lpips"] < 1, (name, got)
    assert summary["gamma"]["psnr"] > summary["input"]["psnr"]  # the references are brighter
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * n
    assert (tmp_path / "grid.png").stat().st_size > 1_000


@pytest.mark.shared
def test_evaluate_command_reproduces_baselines(tmp_path, capsys) -> None:
    """The command's whole pipeline (reading, metrics, reports) on the 22 val pairs against the published
    gamma numbers; the other baselines' published numbers are checked through the library in
    test_baselines.py (they differ from gamma only in the enhancement function), and each extra method
    here would cost ~20 s of LPIPS on two cores."""
    val = shared_dir() / "data" / "sice-lowlight" / "val"
    assert main(["evaluate", "--data", str(val), "--method", "gamma", "--output", str(tmp_path), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "raw (no GT-mean)" in table and "GT-mean rescaled" in table
    summary = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert set(summary) == {"gamma"}
    got, (p, s, l) = summary["gamma"], PUBLISHED["gamma"]
    assert got["n"] == 22
    assert got["psnr"] == pytest.approx(p, abs=0.05) and got["ssim"] == pytest.approx(s, abs=0.005)
    assert got["lpips"] == pytest.approx(l, abs=0.005)
    assert {"psnr_gtmean", "ssim_gtmean", "ssim_rgb", "ssim_rgb_gtmean", "lpips_gtmean"} <= set(got)
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 22
    assert (tmp_path / "grid.png").stat().st_size > 10_000


def test_evaluate_rejects_unknown_method(tmp_path, capsys, example_pairs) -> None:
    val = example_pairs / "val"
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(val), "--method", "nope"])
