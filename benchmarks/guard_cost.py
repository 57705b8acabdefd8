#!/usr/bin/env python
"""What the inference guard (llflow.model.guard) costs: the bundled weights' fast engine with its
guard and without it, timed alternately in one process (guarded, plain, guarded, plain, ...) so
that drift and a shared machine affect both alike. CPU time (``time.thread_time``, 1 thread) and
wall time per forward pass, medians over ``--rounds``; prints a table and writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/guard_cost.py [--size 400x600] [--rounds 9] [--precision fp32]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from llflow import LLFlow
from llflow.preprocess import image_condition
from llflow.runtime import cpu_flags, cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="400x600")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "guard_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    h, w = (int(v) for v in args.size.split("x"))
    guarded = LLFlow.from_pretrained()
    plain = LLFlow.from_pretrained()
    plain.set_inverse_guard(None)
    engines = {"guarded": guarded.prepare_for_inference(args.precision),
               "plain": plain.prepare_for_inference(args.precision)}
    low = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 0.2
    lq = image_condition(low, None, 8, torch.float32)
    times: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in engines}
    with torch.no_grad():
        outs = {k: e.forward_image(lq) for k, e in engines.items()}  # warm-up
        for _ in range(args.rounds):
            for name, engine in engines.items():
                cpu, wall = time.thread_time(), time.perf_counter()
                engine.forward_image(lq)
                times[name]["cpu"].append(time.thread_time() - cpu)
                times[name]["wall"].append(time.perf_counter() - wall)
    result = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    ratio_cpu = result["guarded"]["cpu"] / result["plain"]["cpu"]
    ratio_wall = result["guarded"]["wall"] / result["plain"]["wall"]
    spread = {name: (min(t["cpu"]), max(t["cpu"])) for name, t in times.items()}
    print(f"LOL_smallNet {h}x{w} {args.precision}, 1 thread, {args.rounds} alternating rounds; {cpu_name()}")
    print(f"{'engine':<10}{'CPU s (median)':>16}{'min':>9}{'max':>9}{'wall s':>10}")
    for name, r in result.items():
        print(f"{name:<10}{r['cpu']:>16.3f}{spread[name][0]:>9.3f}{spread[name][1]:>9.3f}{r['wall']:>10.3f}")
    print(f"guarded / plain: CPU ×{ratio_cpu:.4f}, wall ×{ratio_wall:.4f}; outputs identical: "
          f"{bool(torch.equal(outs['guarded'], outs['plain']))}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "size": [h, w], "precision": args.precision, "rounds": args.rounds, "threads": 1,
        "cpu": cpu_name(), "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx"))),
        "machine": platform.machine(), "torch": torch.__version__, "median": result,
        "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall, "samples": times,
        "identical": bool(torch.equal(outs["guarded"], outs["plain"]))}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
