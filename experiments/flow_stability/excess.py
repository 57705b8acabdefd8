"""How far outside the measured training ranges does each photo's τ = 0 inverse go?

For each image (longest side ≤ --max-side) the unguarded reverse pass is run and, at every
conditional affine layer, the largest excess of a value beyond that channel's measured range is
recorded in units of the range's width (0 = inside), for both division terms. An image with excess below the guard margin
is left bit-identical by the guard; the exploding ones go far beyond. Also records the share of
raw output values outside [-0.5, 1.5].

    python experiments/flow_stability/excess.py --weights GUARDED.safetensors FOLDER ... --json out.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from llflow import LLFlow
from llflow.io import list_images
from llflow.model.encoder import stack_conditions
from llflow.model.guard import trace_division_terms
from llflow.preprocess import image_condition

from diagnose import load  # noqa: E402


@torch.no_grad()
def excess_per_layer(model: LLFlow, low: torch.Tensor, widths: dict, centres: dict) -> tuple[dict[str, float], torch.Tensor]:
    """Unguarded τ = 0 reverse pass; per layer and term, the largest excess beyond the measured range."""
    lq = image_condition(low, None, model.config.multiple, torch.float32)
    enc = model.encode(lq)
    conds = stack_conditions(enc)
    z = model.prior_mean(enc)
    excess = {}

    def beyond(key: tuple[int, str], t: torch.Tensor) -> None:
        half, centre = widths[key].view(1, -1, 1, 1) / 2, centres[key].view(1, -1, 1, 1)
        e = torch.nan_to_num(((t - centre).abs() - half) / (2 * half), nan=float("inf"))
        excess[f"{key[0]}.{key[1]}"] = max(0.0, float(e.max()))

    z = trace_division_terms(model, conds, z, beyond)
    return excess, z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--margin", type=float, default=0.5, help="margin the file's ranges were widened by")
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = LLFlow.from_pretrained(args.weights)
    guard = model.inverse_guard
    assert guard is not None and guard.measured, "weights without measured ranges"
    widths, centres = {}, {}
    for index, terms in guard.bounds.items():  # undo the stored margin: the measured range itself
        for term, (lo, hi) in terms.items():
            widths[(index, term)] = (hi - lo) / (1 + 2 * args.margin)
            centres[(index, term)] = (hi + lo) / 2
    rows = []
    for path in list_images(args.inputs):
        low = load(str(path), args.max_side)
        excess, out = excess_per_layer(model, low, widths, centres)
        share = float((~torch.isfinite(out) | (out < -0.5) | (out > 1.5)).float().mean())
        row = {"image": str(path), "mean": float(low.mean()), "max_excess": max(excess.values()),
               "share_out": share, "excess": excess}
        rows.append(row)
        print(f"{path}  mean {row['mean']:.3f}  max excess {row['max_excess']:.3g}  out {share:.2%}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
