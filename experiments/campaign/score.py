"""Score weights files on the val pairs: per image and as means with bootstrap 90 % intervals.

Metrics, τ = 0, reference engine (the exact official computation), scored like ``llflow evaluate``:
raw PSNR, SSIM (grey), LPIPS-alex, GT-mean PSNR, and the NLL (bits per pixel, encoder prior). With
``--samples N`` also the sampling check: PSNR of the mean of N samples at ``--temperature`` against
τ = 0, per image (the campaign's target: within 0.5 dB for at least 16 of 22 images).

    python experiments/campaign/score.py NAME=WEIGHTS [NAME=WEIGHTS ...] \
        [--data ../shared/data/sice-lowlight/val] [--samples 8] --json out.json

Intervals: 10,000 bootstrap resamples of the images (seed 0), 5th and 95th percentiles of the mean.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from llflow import LLFlow
from llflow.data import PairedDataset
from llflow.metrics import evaluate_pair, float_to_uint8, psnr

METRICS = ("psnr", "ssim", "lpips", "psnr_gtmean", "nll")


def bootstrap_interval(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    return float(np.percentile(means, 5)), float(np.percentile(means, 95))


@torch.no_grad()
def score(model: LLFlow, data: PairedDataset, samples: int, temperature: float) -> list[dict]:
    rows = []
    engine = model.prepare_for_inference("fp32") if samples else None
    for index in range(len(data)):
        item = data[index]
        low, gt, histeq = (item[k][None] for k in ("low", "gt", "histeq"))
        out = model.enhance(low, histeq=histeq, clamp=False)
        gt_u8 = float_to_uint8(gt[0].permute(1, 2, 0).numpy())
        row = {"image": item["name"], **evaluate_pair(out[0].permute(1, 2, 0).numpy(), gt_u8)}
        h, w = (s - s % 8 for s in gt.shape[-2:])
        row["nll"] = float(model.nll(low[..., :h, :w], gt[..., :h, :w], histeq=histeq[..., :h, :w]).mean())
        if samples:
            from llflow.preprocess import image_condition

            lq = image_condition(low, histeq, model.config.multiple, torch.float32)
            prepared = engine.prepare_condition(lq)
            generator = torch.Generator().manual_seed(index)
            draws = [engine.decode(prepared, temperature=temperature, generator=generator)[..., :gt.shape[-2], :gt.shape[-1]]
                     for _ in range(samples)]
            mean_image = torch.stack(draws).mean(0).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            one = draws[0].clamp(0, 1)[0].permute(1, 2, 0).numpy()
            row["psnr_sample_mean"] = psnr(float_to_uint8(mean_image), gt_u8)
            row["psnr_one_sample"] = psnr(float_to_uint8(one), gt_u8)
            row["sample_spread"] = float(torch.stack(draws).clamp(0, 1).std(0).mean() * 255)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    summary = {}
    keys = [k for k in rows[0] if k != "image"]
    for key in keys:
        values = [r[key] for r in rows]
        low, high = bootstrap_interval(values)
        summary[key] = {"mean": float(np.mean(values)), "ci90": [low, high]}
    if "psnr_sample_mean" in rows[0]:
        gaps = [r["psnr_sample_mean"] - r["psnr"] for r in rows]
        summary["sampling"] = {"within_0.5_db": int(sum(abs(g) <= 0.5 for g in gaps)), "images": len(rows),
                               "gap_min": float(min(gaps)), "gap_max": float(max(gaps)),
                               "gap_mean": float(np.mean(gaps))}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="NAME=WEIGHTS (safetensors or .pth); 'default' = the bundled file")
    parser.add_argument("--data", default="../shared/data/sice-lowlight/val")
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    data = PairedDataset(args.data, crop=None, flip=False)
    report = {"data": args.data, "images": len(data), "samples": args.samples, "temperature": args.temperature,
              "models": {}}
    for spec in args.models:
        name, _, path = spec.partition("=")
        tic = time.time()
        model = LLFlow.from_pretrained(None if path == "default" else path)
        rows = score(model, data, args.samples, args.temperature)
        summary = summarise(rows)
        report["models"][name] = {"weights": path, "summary": summary, "per_image": rows,
                                  "seconds": round(time.time() - tic, 1)}
        line = "  ".join(f"{k} {summary[k]['mean']:.4g} [{summary[k]['ci90'][0]:.4g}, {summary[k]['ci90'][1]:.4g}]"
                         for k in METRICS if k in summary)
        print(f"{name}: {line}", flush=True)
        if "sampling" in summary:
            print(f"{name}: sampling {summary['sampling']}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
