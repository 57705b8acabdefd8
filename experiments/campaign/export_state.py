"""Weights file from a run folder's ``state.pt`` (a stopped or running campaign run): the weight
average (EMA) by default, ``--raw`` for the trained weights; ``--guard-pairs N`` measures the
inference guard's ranges on N training pairs (llflow.model.guard), as ``llflow train`` exports do.

    python experiments/campaign/export_state.py RUN_FOLDER OUT.safetensors [--raw] [--guard-pairs 12]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from llflow import LLFlow
from llflow.model.config import config_from_mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--raw", action="store_true", help="the trained weights, not their average")
    parser.add_argument("--guard-pairs", type=int, default=0)
    parser.add_argument("--train", default=None, help="training pair folder for the guard (default: the run's)")
    args = parser.parse_args()
    state = torch.load(args.run / "state.pt", map_location="cpu", weights_only=True)
    config = state["config"]
    model = LLFlow(config_from_mapping(config["model"]))
    use_ema = state.get("ema") is not None and not args.raw
    model.load_state_dict(state["ema"]["model"] if use_ema else state["model"], source=str(args.run))
    model.set_inverse_guard(None)
    meta = {"iteration": str(state["iteration"]), "objective": config["optim"]["objective"],
            "weights": "ema" if use_ema else "raw", "cpu_hours": f"{state.get('cpu_seconds', 0) / 3600:.3f}",
            "run": args.run.name}
    save_weights(model, meta, args.out, args.guard_pairs, args.train or config["data"]["train"])


def save_weights(model: LLFlow, meta: dict[str, str], out: Path, guard_pairs: int, train: str) -> None:
    """Write ``model`` as a weights file; with ``guard_pairs`` > 0 measure the inference guard's
    ranges on that many whole training pairs first, as ``llflow train`` exports do."""
    if guard_pairs:
        from llflow.data import PairedDataset
        from llflow.model.guard import measure_guard

        data = PairedDataset(train, crop=None, flip=False)
        picks = [round(i * len(data) / guard_pairs) for i in range(guard_pairs)]
        pairs = []
        for i in picks:
            item = data[i]
            h, w = (s - s % 8 for s in item["gt"].shape[-2:])
            pairs.append((item["low"][None, :, :h, :w], item["gt"][None, :, :h, :w]))
        model.eval()
        model.set_inverse_guard(measure_guard(model, pairs))
        meta["inverse_guard"] = f"measured on {guard_pairs} training pairs"
    model.save_pretrained(out, metadata=meta)
    print(f"wrote {out} ({meta['weights']} weights at iteration {meta['iteration']}, {meta.get('cpu_hours', '?')} CPU-h)")


if __name__ == "__main__":
    main()
