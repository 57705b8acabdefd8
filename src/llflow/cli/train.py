"""``llflow train``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..training import TrainConfig


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LLFlow (NLL or L1 objective) from a YAML config",
                       description="Train LLFlow. Multi-process: torchrun --nproc-per-node N -m llflow train ...")
    p.add_argument("config", nargs="?", help="training YAML (see configs/); optional with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 --set data.batch_size=8")
    p.add_argument("--resume", type=Path, help="run folder (or its state.pt) to continue exactly")
    p.add_argument("--output", help="run folder (default: the --resume folder, else the config's `output`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    import yaml

    from ..training import load_config, run_training

    if args.config is None and args.resume is None:
        raise SystemExit("llflow train: give a config YAML, or --resume RUN_FOLDER")
    resumed_folder = None
    if args.resume is not None:
        resumed_folder = args.resume if args.resume.is_dir() else args.resume.parent
    config_path = args.config if args.config is not None else resumed_folder / "config.yaml"
    # A resumed run writes back into the folder it resumed from (not the `output` recorded in its
    # config), so a copied or moved run folder never overwrites the run it came from.
    output = args.output if args.output else resumed_folder
    overrides = list(args.overrides)
    if output is not None:
        overrides.append(f"output={yaml.safe_dump(str(output)).strip().removesuffix('...').strip()}")
    cfg = load_config(config_path, overrides)
    if args.config is not None and resumed_folder is not None:
        _refuse_a_changed_recipe(cfg, Path(args.config), resumed_folder, overrides)
    best = run_training(cfg, device=args.device, resume=args.resume)
    if best.iteration >= 0:
        print(f"best validation {best.metric} at iteration {best.iteration}: {abs(best.value):.4f}")
    return 0


def _refuse_a_changed_recipe(cfg: TrainConfig, config: Path, run: Path, overrides: list[str]) -> None:
    """``--resume`` continues a run exactly; a config file that silently differs from the one the run
    was started with (say, the campaign YAML given for a run started with ``--set optim.aux_ssim=3``)
    would change its recipe midway without a word. Changes must be explicit: ``--set``."""
    from ..training.config import config_differences, load_config

    recorded = run / "config.yaml"
    if not recorded.is_file():
        return
    # `init` only matters at a fresh start (the state holds the weights); `output` is the run folder.
    differences = config_differences(load_config(recorded, overrides), cfg, ignore=("output", "init"))
    if differences:
        listed = "; ".join(f"{key}: {was!r} in the run, {now!r} in {config}" for key, was, now in sorted(differences))
        raise SystemExit(f"llflow train: {config} differs from {recorded} ({listed}): omit the config to "
                         "continue the run as it was, or change a setting with --set KEY=VALUE")
