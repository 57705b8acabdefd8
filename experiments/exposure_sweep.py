"""How output brightness moves with the latent: the measurement behind ``--exposure``.

For every low-light image of the SICE val split, decode ``z`` for a grid of EV values with three
candidate latent directions and record the mean output brightness (mean of R, G, B in [0, 1]), the
effective change in stops of linear luminance relative to EV 0, the global colour balance
(chromaticity: each channel's share of the mean) shift and the clipped fraction:

* ``gradient`` — what llflow ships (:func:`llflow.inference.exposure_shift`): the model's own
  colour-neutral brightness direction, amplitude bisected for ``2^EV`` × linear luminance on a
  192-px proxy. Computed through the public ``Enhancer.run(exposure=EV)`` path.
* ``ones`` — ``z = μ + c·EV·1`` (every latent channel shifted equally), ``c = --step``.
* ``mu``   — ``z = μ·2^(k·EV)`` (scaling along the prior mean), ``k = --mu-k``.

Prints a table (one row per EV and method, averaged over images) plus the per-image monotonicity,
and writes everything to JSON.

    python experiments/exposure_sweep.py --model runs/sice_smallnet_nll/best.safetensors \
        --out experiments/results/exposure_sweep.json
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from llflow.inference import load_model
from llflow.io import read_image
from llflow.model import LLFlow
from llflow.preprocess import pad_to_multiple
from llflow.preprocess import equalize_histogram_tensor, make_condition

REPO = Path(__file__).resolve().parents[1]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def stats(out: torch.Tensor) -> Dict[str, float]:
    """Brightness, linear luminance, chromaticity (share of R, G, B in the mean) and clipping."""
    rgb_mean = out.mean(dim=(0, 2, 3)).double()
    lin = srgb_to_linear(out.double())
    lum = float((0.2126 * lin[:, 0] + 0.7152 * lin[:, 1] + 0.0722 * lin[:, 2]).mean())
    chroma = (rgb_mean / rgb_mean.sum().clamp_min(1e-9)).tolist()
    return {"mean": float(out.mean()), "luminance": lum, "chroma": chroma,
            "clipped": float((out >= 0.999).float().mean())}


@torch.no_grad()
def decode_latents(net: LLFlow, low: torch.Tensor, latents) -> List[torch.Tensor]:  # noqa: ANN001
    """Encode once, decode ``z = latents(μ)[i]`` for each i (comparison directions)."""
    h, w = low.shape[-2:]
    lq = make_condition(pad_to_multiple(low, 8), pad_to_multiple(equalize_histogram_tensor(low), 8))
    mu = net.prior_mean(net.encode(lq))
    prepared = net.prepare_condition(lq) if hasattr(net, "prepare_condition") else None  # encoder once
    outs = []
    for z in latents(mu):
        x = net.decode(prepared, z=z) if prepared is not None else net.reverse(lq, z=z)[0]
        outs.append(x[..., :h, :w].clamp(0, 1))
    return outs


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "runs" / "sice_smallnet_nll" / "best.safetensors")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "sice-lowlight" / "val" / "low")
    p.add_argument("--size", type=int, default=256, help="resize (area) to this square size for speed; 0 = as is")
    p.add_argument("--evs", default="-2,-1,-0.5,0,0.5,1,2")
    p.add_argument("--step", type=float, default=0.5, help="c of the ones direction")
    p.add_argument("--mu-k", type=float, default=1.0, help="k of the mu direction (0 disables it)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "exposure_sweep.json")
    args = p.parse_args(argv)

    # The training run rewrites its checkpoint: read a private copy.
    tmp = Path(tempfile.mkdtemp()) / args.model.name
    shutil.copyfile(args.model, tmp)
    model = load_model(tmp, device="cpu")
    evs = [float(v) for v in args.evs.split(",")]
    files = sorted(args.data.glob("*.jpg"))[: args.limit or None]
    rows: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    t0 = time.perf_counter()
    for path in files:
        image = read_image(path)
        low = torch.from_numpy(image.rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
        if args.size:
            low = F.interpolate(low, size=(args.size, args.size), mode="area")
        per: Dict[str, List[Dict[str, float]]] = {"gradient": []}
        for ev in evs:
            result = model.run(low, exposure=ev)
            out = result.image
            achieved = result.exposure.achieved_ev if result.exposure is not None else 0.0
            per["gradient"].append({"ev": ev, "proxy_ev": achieved, **stats(out)})
        if args.step:
            outs = decode_latents(model.net, low, lambda mu: [mu + args.step * ev for ev in evs])
            per["ones"] = [{"ev": ev, **stats(o)} for ev, o in zip(evs, outs)]
        if args.mu_k:
            outs = decode_latents(model.net, low, lambda mu: [mu * 2 ** (args.mu_k * ev) for ev in evs])
            per["mu"] = [{"ev": ev, **stats(o)} for ev, o in zip(evs, outs)]
        rows[path.name] = per
        print(f"{path.name}: " + "  ".join(f"{k} " + " ".join(f"{r['mean']:.3f}" for r in v) for k, v in per.items())
              + f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    zero = evs.index(0.0)
    summary = {}
    print(f"\nexposure sweep on {len(files)} SICE val images ({args.size or 'full'} px), step c={args.step}, "
          f"mu k={args.mu_k}")
    print(f"{'method':8} {'EV':>5} {'mean':>6} {'stops':>6} {'Δchroma':>8} {'clipped':>8}")
    for method in rows[files[0].name]:
        monotonic = 0
        table = []
        for i, ev in enumerate(evs):
            means = [rows[f.name][method][i]["mean"] for f in files]
            stops = [math.log2(max(rows[f.name][method][i]["luminance"], 1e-12)
                               / rows[f.name][method][zero]["luminance"]) for f in files]
            dchroma = [max(abs(a - b) for a, b in zip(rows[f.name][method][i]["chroma"],
                                                      rows[f.name][method][zero]["chroma"])) for f in files]
            clipped = [rows[f.name][method][i]["clipped"] for f in files]
            entry = {"ev": ev, "mean": float(np.mean(means)), "stops": float(np.mean(stops)),
                     "stops_min": float(np.min(stops)), "stops_max": float(np.max(stops)),
                     "chroma_shift": float(np.mean(dchroma)), "chroma_shift_max": float(np.max(dchroma)),
                     "clipped": float(np.mean(clipped))}
            table.append(entry)
            print(f"{method:8} {ev:+5.1f} {entry['mean']:6.3f} {entry['stops']:+6.2f} {entry['chroma_shift']:8.4f} "
                  f"{entry['clipped']:8.4f}")
        non_decreasing, exceptions = 0, []
        for f in files:
            m = [r["mean"] for r in rows[f.name][method]]
            strict = all(b > a for a, b in zip(m, m[1:]))  # NaN compares False: not monotonic
            monotonic += strict
            non_decreasing += all(b >= a - 1e-4 for a, b in zip(m, m[1:]))
            if not strict:
                exceptions.append({"image": f.name, "means": m})
        summary[method] = {"table": table, "monotonic_images": monotonic, "non_decreasing_images": non_decreasing,
                           "images": len(files), "not_strictly_increasing": exceptions}
        print(f"{method}: brightness strictly increasing with EV on {monotonic}/{len(files)} images, "
              f"non-decreasing (equal once saturated) on {non_decreasing}/{len(files)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model), "size": args.size, "evs": evs, "step": args.step,
                                    "mu_k": args.mu_k, "summary": summary, "per_image": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
