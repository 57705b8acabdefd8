"""What the ``--uncertainty`` map shows on real photos: statistics of the per-pixel std over samples.

For each image: std over N samples at τ (RGB-averaged, output [0, 1] units) — mean, median, 99th
percentile, max, the share of pixels above the PNG full scale (0.25) — and how it relates to the
input: mean std in the darkest vs the brightest 10 % of input pixels, and near strong edges vs flat
regions. Writes the maps as 16-bit PNGs exactly as ``llflow enhance --uncertainty`` does.

    python experiments/uncertainty_example.py --model runs/sice_smallnet_nll/best.safetensors
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List

import cv2
import numpy as np
import torch

from llflow.inference import UNCERTAINTY_FULL_SCALE
from llflow.inference import load_model, uncertainty_from_samples
from llflow.io import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "llflow" / "examples"


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--model", type=Path, default=REPO / "runs" / "sice_smallnet_nll" / "best.safetensors")
    p.add_argument("-n", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "uncertainty")
    args = p.parse_args(argv)
    images = args.images or sorted(q for q in EXAMPLES.iterdir() if q.suffix in (".jpg", ".png"))
    tmp = Path(tempfile.mkdtemp()) / args.model.name
    shutil.copyfile(args.model, tmp)
    model = load_model(tmp, device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for path in images:
        rgb = read_image(path).rgb.astype(np.float32) / 255
        low = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        samples = list(model.sample_tensors(low, args.n, args.temperature, generator=torch.Generator().manual_seed(0)))
        std = uncertainty_from_samples(samples)[0, 0].numpy()
        luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        dark, bright = luma <= np.quantile(luma, 0.1), luma >= np.quantile(luma, 0.9)
        mean_out = torch.cat(samples).mean(0).permute(1, 2, 0).numpy() @ np.array([0.299, 0.587, 0.114], np.float32)
        edges = np.hypot(cv2.Sobel(mean_out, cv2.CV_32F, 1, 0), cv2.Sobel(mean_out, cv2.CV_32F, 0, 1))
        strong, flat = edges >= np.quantile(edges, 0.9), edges <= np.quantile(edges, 0.5)
        entry = {"image": path.name, "mean": float(std.mean()), "median": float(np.median(std)),
                 "p99": float(np.quantile(std, 0.99)), "max": float(std.max()),
                 "above_full_scale": float((std > UNCERTAINTY_FULL_SCALE).mean()),
                 "darkest10": float(std[dark].mean()), "brightest10": float(std[bright].mean()),
                 "edges10": float(std[strong].mean()), "flat50": float(std[flat].mean())}
        report.append(entry)
        write_image(args.out / f"{path.stem}_uncertainty.png", np.clip(std / UNCERTAINTY_FULL_SCALE, 0, 1), bit_depth=16)
        write_image(args.out / f"{path.stem}_mean.png", torch.cat(samples).mean(0).permute(1, 2, 0).numpy())
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
    (args.out / "stats.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
