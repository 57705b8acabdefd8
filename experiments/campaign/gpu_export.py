"""The GPU lease's weights in files the device tool brings back (at most 16 MiB each; gpu_lease.sh).

    python experiments/campaign/gpu_export.py RUN_FOLDER OUT_FOLDER [--started UNIX_TIME]

Writes the final weight average (EMA) of ``RUN/state.pt`` in fp32 split into two safetensors files
(``ema_final_a``/``_b``; gpu_merge.py joins them), the averages of the snapshots ``RUN/snap_q*.pt`` in
fp16 (one file each, for the learning curve), and ``summary.json`` (iterations, it/s, precision, GPU).
Each file's metadata carries the run's config, so the halves are self-describing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def metadata(state: dict, part: str) -> dict[str, str]:
    return {"iteration": str(state["iteration"]), "config": json.dumps(state["config"]), "part": part,
            "ema_updates": str(state["ema"]["updates"]), "weights": "ema"}


def split_in_two(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Two halves of about equal bytes (keys in order, so the split is deterministic)."""
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    first, second, running = {}, {}, 0
    for key in sorted(tensors):
        t = tensors[key]
        (first if running < total / 2 else second)[key] = t
        running += t.numel() * t.element_size()
    return first, second


def contiguous(sd: dict[str, torch.Tensor], half: bool = False) -> dict[str, torch.Tensor]:
    return {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous() for k, v in sd.items()}


def train_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
            if r.get("kind") == "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--started", type=float, default=None, help="unix time the lease's script began")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    state = load_state(args.run / "state.pt")
    if state.get("ema") is None:
        raise SystemExit(f"{args.run}/state.pt has no weight average (optim.ema_decay unset)")
    first, second = split_in_two(contiguous(state["ema"]["model"]))
    save_file(first, str(args.out / "ema_final_a.safetensors"), metadata(state, "a of a+b"))
    save_file(second, str(args.out / "ema_final_b.safetensors"), metadata(state, "b of a+b"))
    print(f"final weight average at iteration {state['iteration']}: ema_final_a/b.safetensors")

    snapshots = {}
    for snap in sorted(args.run.glob("snap_q*.pt")):
        s = load_state(snap)
        name = f"ema_{snap.stem.removeprefix('snap_')}.safetensors"
        save_file(contiguous(s["ema"]["model"], half=True), str(args.out / name), metadata(s, "whole, fp16"))
        snapshots[name] = int(s["iteration"])
        print(f"snapshot {name} at iteration {s['iteration']}")

    log = train_log(args.run)
    rates = [r["it_per_s"] for r in log if r.get("it_per_s")]
    summary = {
        "iteration": int(state["iteration"]),
        "snapshots": snapshots,
        "it_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
        "last_losses": [(r["iter"], round(r["loss"], 4)) for r in log[-5:]],
        "config": state["config"],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "seconds_since_start": round(time.time() - args.started, 1) if args.started else None,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


if __name__ == "__main__":
    main()
