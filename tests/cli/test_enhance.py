"""``llflow enhance`` / ``llflow info``: inputs, outputs, every bad input class, torchrun splitting,
and end to end on real low-light photos with the bundled default model.

Most tests run the command in-process with the ``tiny`` architecture (random weights) on small
images; the end-to-end test needs the bundled default model (a trained network) to judge brightness.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
import torch

from llflow import LLFlow, cli
from llflow.cli.enhance import EXAMPLES_DIR, UNCERTAINTY_FULL_SCALE
from llflow.inference import Enhancer
from llflow.io import read_image, write_image
from llflow.model import checkpoint

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = LLFlow.from_config("tiny")
    net.mark_initialized()
    return net.save_pretrained(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def dark(h: int = 20, w: int = 28, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return (rng.random(shape) * 50).astype(np.uint8)


def run(args: List[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(["enhance", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def exif_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> None:
    """A JPEG whose EXIF says to rotate it (APP1 inserted after SOI)."""
    ok, encoded = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    raw = encoded.tobytes()
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    path.write_bytes(raw[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + raw[2:])


# ------------------------------------------------------------------------------------ naming, formats
def test_outputs_names_formats_and_kinds(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_image(src / "a.png", dark(seed=1))
    write_image(src / "b.jpg", dark(seed=2))
    write_image(src / "c.tif", dark(seed=3).astype(np.uint16) * 257, bit_depth=16)
    write_image(src / "d.bmp", dark(seed=4))
    write_image(src / "e.webp", dark(seed=5), quality=100)
    write_image(src / "sub" / "f.png", dark(seed=6))
    out = tmp_path / "deep" / "out"  # missing output folder: created with its parents
    code, _, err = run([str(src), "-o", str(out), "--model", str(tiny_path), "-r", "--quiet"], capsys)
    assert code == 0, err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["a_llflow.png", "b_llflow.jpg", "c_llflow.tif", "d_llflow.bmp", "e_llflow.webp",
                     os.path.join("sub", "f_llflow.png")]
    assert read_image(out / "c_llflow.tif").rgb.dtype == np.uint16
    assert "6 done, 0 skipped" in err and "0 failed" in err

    code, _, err = run([str(src / "a.png"), "-o", str(out), "--model", str(tiny_path), "--suffix=-x",
                        "--ext", "jpg", "--quality", "50"], capsys)
    assert code == 0 and (out / "a-x.jpg").is_file()


def test_glob_input(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i in range(3):
        write_image(tmp_path / f"g{i}.png", dark(seed=i))
    code, _, err = run([str(tmp_path / "g[01].png"), "-o", str(tmp_path / "o"), "--model", str(tiny_path)], capsys)
    assert code == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["g0_llflow.png", "g1_llflow.png"]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path: Path, tiny_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", dark())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_llflow.png").write_bytes(b"keep me")
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_path)], capsys)
    assert code == 0 and (out / "a_llflow.png").read_bytes() == b"keep me"
    assert "0 done, 1 skipped" in err
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_path), "--overwrite"], capsys)
    assert code == 0 and "1 done" in err and read_image(out / "a_llflow.png").rgb.shape == (20, 28, 3)


def test_outputs_never_overwrite_inputs(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", dark())
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(tmp_path), "--suffix", "", "--model", str(tiny_path),
                        "--overwrite"], capsys)
    assert code == 1 and "would overwrite an input" in err and (tmp_path / "a.png").read_bytes() == before


def test_same_output_from_two_inputs_is_an_error(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", dark(seed=1))
    write_image(tmp_path / "a.jpg", dark(seed=2))
    code, _, err = run([str(tmp_path), "-o", str(tmp_path / "o"), "--ext", "png", "--model", str(tiny_path)], capsys)
    assert code == 1 and "is also the output of" in err and "1 done" in err


# ------------------------------------------------------------------------------------ bad inputs
def test_every_bad_input_class(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = dark(seed=9)
    write_image(src / "good.png", good)
    png = cv2.imencode(".png", dark())[1].tobytes()
    (src / "corrupt.png").write_bytes(png[:40] + b"\x00" * 64)
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("this is not an image\n")
    write_image(src / "one.png", np.full((1, 1, 3), 20, np.uint8))  # 1×1 image: works
    locked = tmp_path / "locked"
    locked.mkdir()
    write_image(locked / "x.png", dark())
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path) == locked:  # chmod 000 does not stop root, so simulate the unreadable folder
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    code, _, err = run([str(src), str(locked), str(tmp_path / "missing.png"), "-o", str(out),
                        "--model", str(tiny_path)], capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 5, err  # one line each: corrupt, empty, text, unreadable folder, missing
    assert any("corrupt.png" in line and "corrupt or truncated" in line for line in lines)
    assert any("empty.png" in line and "empty (0 bytes)" in line for line in lines)
    assert any("text.png" in line and "text file" in line for line in lines)
    assert any(str(locked) in line and "Permission denied" in line for line in lines)
    assert any("missing.png" in line and "does not exist" in line for line in lines)
    assert "2 done, 0 skipped" in err and "5 failed" in err
    assert read_image(out / "good_llflow.png").rgb.shape == good.shape
    assert read_image(out / "one_llflow.png").rgb.shape == (1, 1, 3)
    assert sorted(p.name for p in out.iterdir()) == ["good_llflow.png", "one_llflow.png"]  # no partial files


def test_16bit_grey_rgba_and_exif(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    deep = (rng.random((24, 32, 3)) * 9000).astype(np.uint16)  # many values inside one 8-bit step
    write_image(src / "deep.png", deep, bit_depth=16)
    write_image(src / "grey.png", dark(channels=1))
    alpha = np.tile(np.linspace(0, 255, 28).astype(np.uint8), (20, 1))
    write_image(src / "rgba.png", dark(seed=3), alpha=alpha)
    stored = dark(16, 40, seed=4)
    exif_jpeg(src / "rotated.jpg", stored, orientation=6)  # display: 40 high × 16 wide

    seen = []
    forward = Enhancer._forward_many

    def spy(self, low, histeq, offsets):  # type: ignore[no-untyped-def]
        seen.append(low.clone())
        return forward(self, low, histeq, offsets)

    monkeypatch.setattr(Enhancer, "_forward_many", spy)
    out = tmp_path / "out"
    code, _, err = run([str(src), "-o", str(out), "--model", str(tiny_path)], capsys)
    assert code == 0, err
    # 16-bit: the network saw the exact 16-bit values as float (no 8-bit step), and 16 bits came out.
    exact = torch.from_numpy(deep.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    assert any(s.shape == exact.shape and torch.equal(s, exact) for s in seen)
    d = read_image(out / "deep_llflow.png")
    assert d.bit_depth == 16 and d.rgb.dtype == np.uint16 and len(np.unique(d.rgb)) > 256
    g = read_image(out / "grey_llflow.png")
    assert g.was_gray and g.rgb.shape == (20, 28, 3)
    assert cv2.imread(str(out / "grey_llflow.png"), cv2.IMREAD_UNCHANGED).ndim == 2  # stored as grey
    a = read_image(out / "rgba_llflow.png")
    assert a.alpha is not None and np.array_equal(a.alpha, alpha)
    r = read_image(out / "rotated_llflow.jpg")
    assert r.rgb.shape == (40, 16, 3)  # display orientation, size kept, EXIF not applied twice


def test_interrupted_run_leaves_no_partial_output(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "a.png", dark())
    out = tmp_path / "out"

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    import llflow.io.atomic

    monkeypatch.setattr(llflow.io.atomic.os, "fsync", interrupted_fsync)
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_path)], capsys)
    assert code == 130 and "interrupted" in err
    assert list(out.iterdir()) == []  # neither a truncated output nor a temporary file


# ------------------------------------------------------------------------------------ model options
def test_no_default_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_image(tmp_path / "a.png", dark())
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and "no default model is installed" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["info"]) == 1 and "no default model is installed" in capsys.readouterr().err


def test_info(tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["info", "--model", str(tiny_path), "--precision", "bf16", "--memory-budget", "1GB"]) == 0
    out = capsys.readouterr().out
    assert "architecture: tiny" in out and "parameters: 1,081,811 used" in out
    assert "device: cpu" in out and "precision: bf16" in out and "budget 953.7 MiB" in out


def test_info_shows_the_precision_choice_and_why(tiny_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from llflow import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # no bf16 units
    assert cli.main(["info", "--model", str(tiny_path), "--device", "cpu"]) == 0  # --precision auto (default)
    out = capsys.readouterr().out
    assert "precision: fp32" in out
    assert "runtime: cpu (" in out and "precision fp32 (auto: the CPU has no avx512_bf16/amx_bf16" in out
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert cli.main(["info", "--model", str(tiny_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "precision: bf16" in out and "auto: the CPU has native bf16 (avx512_bf16)" in out


def test_out_of_range_output_is_reported_in_one_line(tmp_path: Path, tiny_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """The random-weight tiny model's raw output leaves [-0.5, 1.5] almost everywhere: one warning line
    naming the file and the share, and the clamped image is still written."""
    write_image(tmp_path / "a.png", dark())
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_path), "-q"], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "before clamping" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {tmp_path / 'a.png'}: ") and "% of the pixels" in lines[0]
    out = read_image(tmp_path / "o" / "a_llflow.png")
    assert out.rgb.shape == (20, 28, 3)


def test_bad_options(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", dark())
    for extra, message in [(["--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
                           (["--samples", "3", "--temperature", "0"], "identical images"),
                           (["--tile", "-1"], "--tile must be >= 0")]:
        code, _, err = run([str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_path), *extra],
                           capsys)
        assert code == 1 and message in err
    code, _, err = run(["-o", str(tmp_path / "o"), "--model", str(tiny_path)], capsys)
    assert code == 1 and "--examples" in err


# ------------------------------------------------------------------------------------ flow features
def test_samples_uncertainty_exposure_tiles(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", dark(40, 48))
    out = tmp_path / "out"
    code, _, err = run([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_path), "--samples", "3",
                        "--seed", "5", "--uncertainty"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_llflow_s0.png", "a_llflow_s1.png", "a_llflow_s2.png",
                                                     "a_llflow_uncertainty.png"]
    s = [read_image(out / f"a_llflow_s{i}.png").rgb.astype(np.float64) / 255 for i in range(3)]
    assert not np.array_equal(s[0], s[1])
    u = read_image(out / "a_llflow_uncertainty.png")
    assert u.was_gray and u.bit_depth == 16
    std = u.rgb[..., 0] / 65535 * UNCERTAINTY_FULL_SCALE  # the documented scale (white = full scale)
    expected = np.minimum(np.std(s, axis=0).mean(axis=-1), UNCERTAINTY_FULL_SCALE)
    np.testing.assert_allclose(std, expected, atol=2.5e-3)  # the samples on disk are 8-bit

    code, _, err = run([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_path), "--exposure", "1",
                        "--suffix", "_ev1"], capsys)
    assert code == 0 and (out / "a_ev1.png").is_file()


def test_progress_bar_only_on_a_terminal(tmp_path: Path, tiny_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "a.png", dark())
    args = [str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_path), "--overwrite"]
    _, _, err = run(args, capsys)
    assert "img/s" not in err and "1 done" in err  # not a TTY: only the summary
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    _, _, err = run(args, capsys)
    assert "enhance: 100%" in err
    _, _, err = run([*args, "--quiet"], capsys)
    assert "enhance: 100%" not in err and "1 done" in err


# ------------------------------------------------------------------------------------ torchrun
def test_torchrun_splits_inputs_exactly_once(tmp_path: Path, tiny_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        write_image(src / f"im{i}.png", dark(12, 16, seed=i))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "llflow", "enhance", str(src), "-o", str(out), "--model", str(tiny_path), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [f"im{i}_llflow.png" for i in range(5)]
    err = result.stderr
    assert "[rank 0/2] 3 done" in err and "[rank 1/2] 2 done" in err, err  # sorted list, r::2
    assert "all 2 processes: 5 done, 0 skipped, 0 failed" in err


# ------------------------------------------------------------------------------------ end to end
def _assert_enhanced(source: Path, result_path: Path) -> None:
    result = read_image(result_path).rgb.astype(np.float64)
    low = read_image(source).rgb.astype(np.float64)
    assert result.shape == low.shape  # size and orientation kept
    assert result.mean() > low.mean() + 20, source  # clearly brighter (0..255)
    # orientation: the output's (coarse, log) structure lines up with the input's, not a rotated copy
    a, b = (cv2.resize(np.log1p(x.mean(-1)), (48, 48), interpolation=cv2.INTER_AREA) for x in (low, result))
    same, rotated = (np.corrcoef(a.ravel(), c.ravel())[0, 1] for c in (b, b[::-1, ::-1]))
    assert same > 0.5 and same > rotated + 0.1, (source, same, rotated)


def test_end_to_end_examples_with_default_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The README command (llflow enhance --examples), default model."""
    out = tmp_path / "results"
    code, _, err = run(["--examples", "-o", str(out)], capsys)
    assert code == 0, err
    inputs = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(inputs) >= 4
    for source in inputs:
        _assert_enhanced(source, out / f"{source.stem}_llflow{source.suffix}")


@pytest.mark.shared
def test_end_to_end_examples_and_real_photo_with_default_model(tmp_path: Path, shared: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """The README command (llflow enhance --examples) plus a real low-light BMP, default model."""
    photo = shared / "data" / "real-lowlight" / "lime" / "6.bmp"
    out = tmp_path / "results"
    code, _, err = run(["--examples", str(photo), "-o", str(out)], capsys)
    assert code == 0, err
    inputs = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".png")) + [photo]
    assert len(inputs) >= 4
    for source in inputs:
        ext = ".bmp" if source == photo else source.suffix
        _assert_enhanced(source, out / f"{source.stem}_llflow{ext}")
