"""Uniform average of the weight averages (EMA) of several run folders trained from the same start with
the same recipe (seeds of one arm): one weights file, with the inference guard measured on training
pairs as ``llflow train`` exports do. Session 18's candidate rule (campaign README).

    python experiments/campaign/average_weights.py OUT.safetensors RUN_A RUN_B [...] [--guard-pairs 12]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from export_state import save_weights
from llflow import LLFlow
from llflow.model.config import config_from_mapping


def load_ema(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The run's EMA weights and its state (iteration, CPU seconds, config)."""
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    if state.get("ema") is None:
        raise SystemExit(f"{run}: the run has no weight average (optim.ema_decay 0); give runs that keep one")
    return state["ema"]["model"], state


def average(weights: list[dict[str, torch.Tensor]], names: list[str]) -> dict[str, torch.Tensor]:
    """Mean of floating-point tensors; other tensors (counters) must agree across the runs."""
    first = weights[0]
    for other, name in zip(weights[1:], names[1:]):
        if other.keys() != first.keys():
            raise SystemExit(f"{name}: its weights have other keys than {names[0]}'s; average runs of one model")
    out = {}
    for key, value in first.items():
        stack = [w[key] for w in weights]
        if value.is_floating_point():
            out[key] = torch.stack([t.double() for t in stack]).mean(0).to(value.dtype)
        elif all(torch.equal(t, value) for t in stack[1:]):
            out[key] = value
        else:
            raise SystemExit(f"{key}: integer tensor differs between runs; cannot average it")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--guard-pairs", type=int, default=12)
    parser.add_argument("--train", default=None, help="training pair folder for the guard (default: the first run's)")
    args = parser.parse_args()
    loaded = [load_ema(run) for run in args.runs]
    states = [state for _, state in loaded]
    config = states[0]["config"]
    if any(s["config"]["model"] != config["model"] for s in states[1:]):
        raise SystemExit("the runs' model configurations differ; average runs of one model")
    model = LLFlow(config_from_mapping(config["model"]))
    model.load_state_dict(average([w for w, _ in loaded], [str(r) for r in args.runs]), source="average")
    model.set_inverse_guard(None)
    meta = {"iteration": "+".join(str(s["iteration"]) for s in states), "objective": config["optim"]["objective"],
            "weights": f"uniform average of {len(states)} runs' EMA",
            "cpu_hours": f"{sum(s.get('cpu_seconds', 0) for s in states) / 3600:.3f}",
            "run": ", ".join(r.name for r in args.runs)}
    save_weights(model, meta, args.out, args.guard_pairs, args.train or config["data"]["train"])


if __name__ == "__main__":
    main()
