"""The ``llflow`` command: ``train``, ``evaluate``, ``enhance``, ``info`` ..."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import __version__


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LLFlow (NLL or L1 objective) from a YAML config",
                       description="Train LLFlow. Multi-process: torchrun --nproc-per-node N -m llflow train ...")
    p.add_argument("config", nargs="?", help="training YAML (see configs/); optional with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 --set data.batch_size=8")
    p.add_argument("--resume", type=Path, help="run folder (or its state.pt) to continue exactly")
    p.add_argument("--output", help="run folder (default: the config's `output`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import yaml

    from .training import load_config, run_training

    config_path = args.config
    if config_path is None:
        if args.resume is None:
            raise SystemExit("llflow train: give a config YAML, or --resume RUN_FOLDER")
        folder = args.resume if args.resume.is_dir() else args.resume.parent
        config_path = folder / "config.yaml"
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output={yaml.safe_dump(args.output).strip().removesuffix('...').strip()}")
    cfg = load_config(config_path, overrides)
    best = run_training(cfg, device=args.device, resume=args.resume)
    if best.iteration >= 0:
        print(f"best validation {best.metric} at iteration {best.iteration}: {abs(best.value):.4f}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .baselines import BASELINES

    p = sub.add_parser("evaluate", help="score baselines and models on a paired dataset",
                       description="PSNR / SSIM / SSIM-RGB / LPIPS, raw and GT-mean rescaled, per method.")
    p.add_argument("--data", required=True, help="paired dataset folder (low/ + high/, LOL-v1 or LOL-v2 layout)")
    p.add_argument("--split", help="split inside --data (train/val/test, our485/eval15, Train/Test)")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH",
                   help="a trained checkpoint (.safetensors or official .pth); repeatable")
    p.add_argument("--method", action="append", default=None, choices=list(BASELINES),
                   help="classical baselines to include (default: all of them)")
    p.add_argument("--no-baselines", action="store_true", help="evaluate only the --model entries")
    p.add_argument("--temperature", type=float, default=0.0, help="τ for model outputs (default 0: deterministic)")
    p.add_argument("--output", type=Path, help="write summary.json, per_image.csv and grid.png here")
    p.add_argument("--save-images", action="store_true", help="also save every output image under OUTPUT/images")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--limit", type=int, help="only the first N pairs (quick checks)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .baselines import BASELINES
    from .evaluation import run_evaluation

    methods = [] if args.no_baselines else (args.method or list(BASELINES))
    run_evaluation(args.data, methods, args.model, split=args.split, output=args.output,
                   save_images=args.save_images, with_lpips=not args.no_lpips, device=args.device,
                   temperature=args.temperature, limit=args.limit, progress=not args.quiet)
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_evaluate]
from .enhance_cli import add_enhance, add_info; COMMANDS += [add_enhance, add_info]  # noqa: E402,E702
from .export import add_export_onnx; COMMANDS += [add_export_onnx]  # noqa: E402,E702
from .demo import add_demo; COMMANDS += [add_demo]  # noqa: E402,E702


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llflow", description="Low-light image enhancement with LLFlow.")
    parser.add_argument("--version", action="version", version=f"llflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"llflow {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
