"""Scan real photos for exploding inverses, with and without the inverse guard.

For every image (longest side ≤ --max-side, as the issue's scan) the raw τ = 0 output of the fast
fp32 engine is computed twice — weights with the guard switched off, and with the guard stored in
the file — and the table gives max |raw|, the share of values outside [-0.5, 1.5] (non-finite
counted), and whether the guarded output is bit-identical to the unguarded one.

    python experiments/flow_stability/scan.py --weights W.safetensors FOLDER_OR_IMAGE ... --json out.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llflow import LLFlow
from llflow.io import list_images
from llflow.metrics import float_to_uint8, psnr

from diagnose import load  # noqa: E402  (same folder)


def out_of_range_share(x: torch.Tensor) -> float:
    bad = ~torch.isfinite(x) | (x < -0.5) | (x > 1.5)
    return float(bad.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--threshold", type=float, default=1e-3, help="share that counts as exploded")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    guarded = LLFlow.from_pretrained(args.weights)
    plain = LLFlow.from_pretrained(args.weights)
    plain.set_inverse_guard(None)
    engines = {"plain": plain.prepare_for_inference("fp32"), "guarded": guarded.prepare_for_inference("fp32")}
    rows = []
    tic = time.time()
    for path in list_images(args.inputs):
        low = load(str(path), args.max_side)
        outs = {k: e.enhance(low, clamp=False) for k, e in engines.items()}
        row = {"image": str(path), "mean": float(low.mean()),
               "identical": bool(torch.equal(outs["plain"], outs["guarded"])),
               # how much a (well-exposed) input changes: PSNR of the clamped output against it
               "psnr_vs_input": psnr(float_to_uint8(outs["guarded"][0].clamp(0, 1).permute(1, 2, 0).numpy()),
                                     float_to_uint8(low[0].permute(1, 2, 0).numpy()))}
        for k, out in outs.items():
            finite = out[torch.isfinite(out)]
            row[f"{k}_absmax"] = float(finite.abs().max()) if finite.numel() else float("inf")
            row[f"{k}_share_out"] = out_of_range_share(out)
        rows.append(row)
        flag = "" if row["identical"] else "  <- guard acted"
        print(f"{path}  mean {row['mean']:.3f}  |raw| {row['plain_absmax']:.3g} -> {row['guarded_absmax']:.3g}  "
              f"out {row['plain_share_out']:.2%} -> {row['guarded_share_out']:.2%}{flag}", flush=True)
    n = len(rows)
    before = sum(r["plain_share_out"] > args.threshold for r in rows)
    after = sum(r["guarded_share_out"] > args.threshold for r in rows)
    acted = sum(not r["identical"] for r in rows)
    summary = {"images": n, "exploded_before": before, "exploded_after": after, "guard_acted": acted,
               "threshold": args.threshold, "seconds": round(time.time() - tic, 1), "weights": args.weights}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
