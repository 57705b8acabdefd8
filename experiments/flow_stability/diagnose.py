"""Where does the flow's inverse blow up? Instruments the reverse pass (τ = 0) of the bundled model
layer by layer: for every flow step the smallest coupling / injector scale it divides by and the
largest |value| after each operation (injector, coupling, 1×1 conv, ActNorm), for the photos given,
next to the same numbers for a reference image run through the forward pass (the range the inverse
is supposed to reproduce).

    python experiments/flow_stability/diagnose.py IMAGE [IMAGE ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from llflow import LLFlow
from llflow.io import read_image
from llflow.model.encoder import stack_conditions
from llflow.model.flow import FlowStep, Squeeze, _shift_and_scale
from llflow.preprocess import image_condition
from llflow.preprocess import to_float32


def load(path: str, max_side: int = 640) -> torch.Tensor:
    import cv2

    rgb = to_float32(read_image(path).rgb)
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]


def absmax(t: torch.Tensor) -> float:
    t = t.detach()
    finite = torch.isfinite(t)
    if not finite.all():
        return float("inf")
    return float(t.abs().max())


@torch.no_grad()
def trace_inverse(model: LLFlow, low: torch.Tensor) -> list[dict]:
    lq = image_condition(low, None, model.config.multiple, torch.float32)
    enc = model.encode(lq)
    conds = stack_conditions(enc)
    flow = model.flowUpsamplerNet
    z = model.prior_mean(enc)
    rows = [{"layer": "prior mean", "absmax": absmax(z)}]
    for index in reversed(range(len(flow.layers))):
        layer, level = flow.layers[index], flow.level_of_layer[index]
        name = f"L{level} #{index}"
        if isinstance(layer, Squeeze):
            z, _ = layer.inverse(z)
            rows.append({"layer": f"{name} unsqueeze", "absmax": absmax(z)})
            continue
        assert isinstance(layer, FlowStep)
        if layer.affine is not None:
            aff, cond = layer.affine, conds[level]
            z1, z2 = z[:, :aff.channels_first], z[:, aff.channels_first:]
            shift, scale = aff.coupling(z1, cond)
            z2 = z2 / scale - shift
            rows.append({"layer": f"{name} coupling", "absmax": absmax(torch.cat([z1, z2], 1)),
                         "z1_absmax": absmax(z1), "min_scale": float(scale.min()),
                         "share_scale_below_1e-2": float((scale < 1e-2).float().mean()),
                         "shift_absmax": absmax(shift)})
            shift_f, scale_f = aff.injector(cond)
            z = torch.cat([z1, z2], 1) / scale_f - shift_f
            rows.append({"layer": f"{name} injector", "absmax": absmax(z), "min_scale": float(scale_f.min())})
        z, _ = layer.invconv.inverse(z)
        rows.append({"layer": f"{name} 1x1 conv", "absmax": absmax(z)})
        z, _ = layer.actnorm.inverse(z)
        rows.append({"layer": f"{name} actnorm", "absmax": absmax(z)})
    out = z
    rows.append({"layer": "output", "absmax": absmax(out),
                 "share_outside_-0.5_1.5": float(((out < -0.5) | (out > 1.5) | ~torch.isfinite(out)).float().mean())})
    return rows


@torch.no_grad()
def trace_forward(model: LLFlow, low: torch.Tensor, gt: torch.Tensor) -> list[dict]:
    """Forward pass of a reference image: the values each inverse step should give back."""
    lq = image_condition(low, None, model.config.multiple, torch.float32)
    h, w = lq.shape[-2:]
    gt = torch.nn.functional.pad(gt, (0, w - gt.shape[-1], 0, h - gt.shape[-2]), mode="replicate")
    conds = stack_conditions(model.encode(lq))
    flow = model.flowUpsamplerNet
    x, rows = gt, [{"layer": "input", "absmax": absmax(gt)}]
    for index, (layer, level) in enumerate(zip(flow.layers, flow.level_of_layer)):
        x, _ = layer(x, conds.get(level))
        rows.append({"layer": f"L{level} #{index} {type(layer).__name__}", "absmax": absmax(x)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = LLFlow.from_pretrained(args.weights)
    report = {}
    for path in args.images:
        rows = trace_inverse(model, load(path))
        report[path] = rows
        print(f"\n== {path}")
        for r in rows:
            extra = " ".join(f"{k}={v:.3g}" for k, v in r.items() if k not in ("layer", "absmax"))
            print(f"{r['layer']:<24} |max| {r['absmax']:<10.3g} {extra}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
