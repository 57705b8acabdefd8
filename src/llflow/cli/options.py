"""Option declarations shared by the subcommands: the model and where it runs (``--model``,
``--device``, ``--precision``, ``--engine``, ``--memory-budget``) and tiling (``--tile``,
``--tile-pad``), declared once here."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..engines import ENGINES
from ..inference import DEFAULT_TILE_PAD
from ..runtime import PRECISIONS

MODEL_HELP = "'default' (the bundled model) or an official .pth / llflow .safetensors file"
ENGINE_HELP = ("fast (default: folded layers and fused kernels, fp32 within ~1e-6 of the reference), "
               "reference (the official module structure, bit-for-bit) or onnxruntime (the fast engine's "
               "graph exported once and cached; fp32 on the CPU, 5-9%% faster there; needs llflow[onnx])")


def add_model_options(p: argparse.ArgumentParser, engines: Sequence[str] = ENGINES, memory: bool = True,
                      precision_default: str = "auto", device_default: str = "auto", model: bool = True) -> None:
    """``[--model] --device --precision --engine [--memory-budget]``."""
    if model:
        p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--device", default=device_default,
                   help=f"auto, cpu, cuda, cuda:N or mps (default: {device_default})")
    p.add_argument("--precision", default=precision_default, choices=list(PRECISIONS),
                   help=f"network precision (default: {precision_default}; auto = bf16 only where the hardware "
                        "has it natively, fp16 on other GPUs, fp32 otherwise; fp16 needs a GPU)")
    p.add_argument("--engine", default="fast", choices=list(engines),
                   help=ENGINE_HELP if "onnxruntime" in engines else "fast (default) or reference (as for enhance)")
    if memory:
        p.add_argument("--memory-budget", default=None,
                       help="memory allowed per image for automatic tiling, e.g. 2GB (default: half the free "
                            "memory, or $LLFLOW_MEMORY_BUDGET)")


def add_tile_options(p: argparse.ArgumentParser) -> None:
    """``--tile --tile-pad``."""
    p.add_argument("--tile", type=int, default=None,
                   help="tile size for bounded memory (default: automatic when the image would not fit; 0: never)")
    p.add_argument("--tile-pad", type=int, default=DEFAULT_TILE_PAD,
                   help="context pixels around each tile, multiple of 8 (default: %(default)s)")


def check_tile_args(args: argparse.Namespace) -> None:
    """``--tile`` / ``--tile-pad``."""
    if args.tile is not None and args.tile < 0:
        raise ValueError(f"--tile must be >= 0 (0 = never tile), got {args.tile}")
    if args.tile_pad < 0:
        raise ValueError(f"--tile-pad must be >= 0, got {args.tile_pad}")


def load_enhancer(args: argparse.Namespace):  # -> Enhancer
    """The enhancer the model options describe (loaded once per file and cached)."""
    import dataclasses

    from ..inference import load_model
    from ..inference.enhancer import choose_precision

    enhancer = load_model(args.model, args.device, args.precision, args.engine)
    # This request's reason for the precision (a cached enhancer may have been loaded with another).
    choice = dataclasses.replace(choose_precision(args.precision, enhancer.device, args.engine, warn=False),
                                 name=enhancer.precision)
    return dataclasses.replace(enhancer, precision=choice, memory_budget=getattr(args, "memory_budget", None))
