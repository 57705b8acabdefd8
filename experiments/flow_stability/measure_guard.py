"""Measure the inverse guard's ranges (llflow.model.guard) of a weights file on training pairs and
write them into a copy of the file (or in place).

    python experiments/flow_stability/measure_guard.py WEIGHTS --data ../shared/data/sice-lowlight/train \
        [--data ../shared/data/sice-lowlight/train-mild] [--identity] [--every 3] [--margin 0.5] \
        [--out OUT.safetensors]

``--identity`` adds each distinct reference of the folders paired with itself (the campaign trains on
those: ``data.identity_pairs``), so the ranges also cover well-exposed inputs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llflow import LLFlow
from llflow.data import PairedDataset, find_pairs, identity_pairs
from llflow.model.guard import DEFAULT_MARGIN, measure_guard


def pairs_of(source, every: int):
    data = PairedDataset(source, crop=None, flip=False)
    for index in range(0, len(data), every):
        item = data[index]
        h, w = (s - s % 8 for s in item["gt"].shape[-2:])
        yield item["low"][None, :, :h, :w], item["gt"][None, :, :h, :w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--data", action="append", required=True, help="pair folder(s) (repeatable)")
    parser.add_argument("--identity", action="store_true", help="also each reference paired with itself")
    parser.add_argument("--every", type=int, default=3, help="use every N-th pair")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = LLFlow.from_pretrained(args.weights)
    tic = time.time()
    sources = list(args.data)
    if args.identity:
        sources.append(identity_pairs([p for folder in args.data for p in find_pairs(folder)]))
    guard = measure_guard(model, (p for source in sources for p in pairs_of(source, args.every)), args.margin)
    print(f"measured {len(guard.bounds)} layers in {time.time() - tic:.0f} s")
    for index, terms in sorted(guard.bounds.items()):
        for term, (low, high) in terms.items():
            print(f"layer {index:2d} {term:<8}: channels {low.numel():3d}  low {float(low.min()):9.2f}  "
                  f"high {float(high.max()):9.2f}")
    model.set_inverse_guard(guard)
    from safetensors import safe_open

    with safe_open(args.weights, framework="pt") as fh:
        meta = {k: v for k, v in (fh.metadata() or {}).items() if k not in ("llflow_config", "format", "producer")}
    identity = " and their references paired with themselves" if args.identity else ""
    meta["inverse_guard"] = (f"measured on {', '.join(args.data)}{identity} (every {args.every}. pair), "
                             f"margin {args.margin}")
    out = args.out or Path(args.weights)
    model.save_pretrained(out, metadata=meta)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
