"""PSNR between tiled and untiled enhancement of a 2-4 MP real photo (the ``--tile`` quality claim).

No real low-light photo in ../shared is that large (the largest, LIME 10.bmp, is 1039×789), so by
default LIME 10.bmp is upsampled 2× (bicubic) to 2078×1578 = 3.3 MP. The untiled result is the
reference; each (tile, pad) setting is compared with it, at τ = 0 and (same seed) at τ = 0.8, which
also checks that every tile gets the matching slice of the whole image's latent noise.

    python experiments/tiling_psnr.py --model runs/sice_smallnet_nll/best.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from llflow.inference import load_model
from llflow.io import read_image

REPO = Path(__file__).resolve().parents[1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "runs" / "sice_smallnet_nll" / "best.safetensors")
    p.add_argument("--image", type=Path, default=REPO.parent / "shared" / "data" / "real-lowlight" / "lime" / "10.bmp")
    p.add_argument("--scale", type=float, default=2.0, help="bicubic upsampling factor (1 = as is)")
    p.add_argument("--settings", default="512:16,512:32,512:64,256:32",
                   help="comma-separated TILE:PAD pairs")
    p.add_argument("--temperature", type=float, default=0.8, help="also compare samples at this τ (0: skip)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "tiling_psnr.json")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp()) / args.model.name
    shutil.copyfile(args.model, tmp)  # the training run may rewrite the original mid-read
    model = load_model(tmp, device="cpu", precision=args.precision)
    image = read_image(args.image)
    low = torch.from_numpy(image.rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    if args.scale != 1:
        low = F.interpolate(low, scale_factor=args.scale, mode="bicubic", align_corners=False).clamp(0, 1)
    h, w = low.shape[-2:]
    print(f"{args.image.name} ×{args.scale:g}: {w}×{h} = {h * w / 1e6:.2f} MP, model {args.model}", file=sys.stderr)

    results = {"image": str(args.image), "scale": args.scale, "width": w, "height": h, "model": str(args.model),
               "precision": args.precision, "runs": []}
    temps = [0.0] + ([args.temperature] if args.temperature else [])
    for tau in temps:
        t0 = time.perf_counter()
        ref = model.enhance_tensor(low, tau, generator=torch.Generator().manual_seed(0), tile=0)
        t_ref = time.perf_counter() - t0
        print(f"τ={tau}: untiled {t_ref:.0f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB",
              file=sys.stderr)
        for setting in args.settings.split(","):
            if tau and setting != args.settings.split(",")[1 if "," in args.settings else 0]:
                continue  # samples: one setting is enough to check the noise slicing
            tile, pad = (int(v) for v in setting.split(":"))
            t0 = time.perf_counter()
            out = model.enhance_tensor(low, tau, generator=torch.Generator().manual_seed(0), tile=tile, tile_pad=pad)
            elapsed = time.perf_counter() - t0
            value = psnr(out, ref)
            results["runs"].append({"temperature": tau, "tile": tile, "pad": pad, "psnr": value,
                                    "max_abs_diff": float((out - ref).abs().max()), "seconds": elapsed,
                                    "untiled_seconds": t_ref})
            print(f"τ={tau} tile {tile} pad {pad}: PSNR(tiled, untiled) = {value:.2f} dB, "
                  f"max |Δ| {results['runs'][-1]['max_abs_diff']:.4f}, {elapsed:.0f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["runs"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
