#!/usr/bin/env python
"""Is ``torch.compile`` worth it? Compiles ``LLFlow.reverse`` (inductor, with and without
``freezing``) and compares CPU time and output with the fast engine (``prepare_for_inference``).

    python benchmarks/torch_compile.py --threads 1 --json benchmarks/results/torch_compile_1thread.json

CPU time (``time.process_time``) with one thread, so a shared machine does not distort it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from llflow.model import LLFlow
from llflow.preprocess import make_condition


def cpu_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="400x600")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/torch_compile.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    model = LLFlow.from_pretrained().eval()
    gen = torch.Generator().manual_seed(0)
    lq = make_condition(torch.rand(1, 3, h, w, generator=gen) * 0.2, torch.rand(1, 3, h, w, generator=gen))
    rows = []
    with torch.no_grad():
        ref = model.reverse(lq)[0]
        engine = model.prepare_for_inference("fp32")
        rows.append({"variant": "fast engine (no compile)", "compile_s": 0.0,
                     "rel_diff": float((engine.forward_image(lq) - ref).abs().max() / ref.abs().max()),
                     "cpu_s": cpu_time(lambda: engine.forward_image(lq), args.repeats)})
        rows.append({"variant": "reference modules (no compile)", "compile_s": 0.0, "rel_diff": 0.0,
                     "cpu_s": cpu_time(lambda: model.reverse(lq), args.repeats)})
        import torch._inductor.config as inductor_config

        for freezing in (False, True):
            torch._dynamo.reset()
            inductor_config.freezing = freezing
            compiled = torch.compile(lambda x: model.reverse(x)[0])
            start = time.perf_counter()
            out = compiled(lq)
            compile_s = time.perf_counter() - start
            rows.append({"variant": f"torch.compile(reverse), freezing={freezing}", "compile_s": compile_s,
                         "rel_diff": float((out - ref).abs().max() / ref.abs().max()),
                         "cpu_s": cpu_time(lambda: compiled(lq), args.repeats)})
    print(f"\n{'variant':<45}{'compile s':>10}{'CPU s':>8}{'rel diff':>10}")
    for r in rows:
        print(f"{r['variant']:<45}{r['compile_s']:10.1f}{r['cpu_s']:8.2f}{r['rel_diff']:10.1e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "size": [h, w], "torch": torch.__version__,
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
