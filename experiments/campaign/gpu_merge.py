"""Join the GPU lease's fp32 weight-average halves (gpu_export.py) into one llflow weights file, with
the inference guard measured on training pairs as ``llflow train`` exports do; fp16 snapshots
(``ema_q*.safetensors``) are accepted alone.

    python experiments/campaign/gpu_merge.py OUT.safetensors ema_final_a.safetensors ema_final_b.safetensors \
        [--guard-pairs 12] [--train ../shared/data/sice-lowlight/train]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open

from export_state import save_weights
from llflow import LLFlow
from llflow.model.config import config_from_mapping


def read_parts(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            part_meta = f.metadata() or {}
            if meta and part_meta.get("iteration") != meta.get("iteration"):
                raise SystemExit(f"{path}: iteration {part_meta.get('iteration')} differs from the other part's "
                                 f"{meta.get('iteration')}; give the halves of one export")
            meta = part_meta
            for key in f.keys():
                tensor = f.get_tensor(key)
                tensors[key] = tensor.float() if tensor.is_floating_point() else tensor
    return tensors, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    parser.add_argument("--guard-pairs", type=int, default=12)
    parser.add_argument("--train", default="../shared/data/sice-lowlight/train")
    args = parser.parse_args()
    tensors, meta = read_parts(args.parts)
    config = json.loads(meta["config"])
    model = LLFlow(config_from_mapping(config["model"]))
    model.load_state_dict(tensors, source=", ".join(str(p) for p in args.parts))  # strict: a missing half fails
    model.set_inverse_guard(None)
    out_meta = {"iteration": meta["iteration"], "objective": config["optim"]["objective"], "weights": "ema",
                "run": "gpu lease", "precision": config["optim"]["precision"],
                "crop": str(config["data"]["crop"]), "batch_size": str(config["data"]["batch_size"])}
    save_weights(model, out_meta, args.out, args.guard_pairs, args.train)


if __name__ == "__main__":
    main()
