"""``llflow evaluate``: every model runs through the same enhancer and engine as ``llflow enhance``."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_model_options


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from ..baselines import BASELINES

    p = sub.add_parser("evaluate", help="score baselines and models on a paired dataset",
                       description="PSNR / SSIM / SSIM-RGB / LPIPS, raw and GT-mean rescaled, per method.")
    p.add_argument("--data", required=True, help="paired dataset folder (low/ + high/, LOL-v1 or LOL-v2 layout)")
    p.add_argument("--split", help="split inside --data (train/val/test, our485/eval15, Train/Test)")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH", dest="models",
                   help="a trained checkpoint (.safetensors or official .pth); repeatable")
    p.add_argument("--method", action="append", default=None, choices=list(BASELINES),
                   help="classical baselines to include (default: all of them)")
    p.add_argument("--no-baselines", action="store_true", help="evaluate only the --model entries")
    p.add_argument("--temperature", type=float, default=0.0, help="τ for model outputs (default 0: deterministic)")
    p.add_argument("--output", type=Path, help="write summary.json, per_image.csv and grid.png here")
    p.add_argument("--save-images", action="store_true", help="also save every output image under OUTPUT/images")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--limit", type=int, help="only the first N pairs (quick checks)")
    add_model_options(p, memory=False, precision_default="fp32", device_default="cpu", model=False)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..baselines import BASELINES
    from ..evaluation import run_evaluation

    methods = [] if args.no_baselines else (args.method or list(BASELINES))
    run_evaluation(args.data, methods, args.models, split=args.split, output=args.output,
                   save_images=args.save_images, with_lpips=not args.no_lpips, device=args.device,
                   temperature=args.temperature, limit=args.limit, progress=not args.quiet,
                   precision=args.precision, engine=args.engine)
    return 0
