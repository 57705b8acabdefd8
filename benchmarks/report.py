#!/usr/bin/env python
"""Render benchmark results (JSON written by ``bench.py``) as the Markdown tables of the README's
performance section, so every number there can be traced to a file.

    python benchmarks/report.py benchmarks/results/matrix_2threads.json benchmarks/results/steps_smallnet_1thread.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _meta_line(meta: dict[str, Any]) -> str:
    load = meta.get("loadavg_start")
    load_text = f", load average at start {load[0]:.2f}" if load else ""
    return (f"_{meta.get('time')}, {meta.get('cpu', '?')} ({meta.get('cpu_count')} cores), torch {meta.get('torch')}, "
            f"{meta.get('threads')} thread(s), reference conv {meta.get('ref_conv')}{load_text}_")


def matrix_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| preset | size | precision | path | tile | median s | MP/s | peak RSS MB | GFLOP | GFLOP/s | efficiency |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['preset']} | {r['width']}×{r['height']} | {r['precision']} | {r['variant']} | | error | | | | | |")
            continue
        eff = f"{r['efficiency']:.2f}"
        if "efficiency_vs_lp_ref" in r:  # bf16 rows: also against a bf16 reference convolution
            eff += f" (bf16 ref: {r['efficiency_vs_lp_ref']:.2f})"
        if "efficiency_cpu" in r:
            eff += f", CPU-time {r['efficiency_cpu']:.2f}"
        out.append(f"| {r['preset']} | {r['width']}×{r['height']} | {r['precision']} | {r['variant']} | "
                   f"{r.get('tile') or '–'} | {r['median_s']:.2f} | {r['mpix_per_s']:.3f} | {r['peak_mem_mb']:.0f} | "
                   f"{r['flops'] / 1e9:.0f} | {r['gflops_per_s']:.0f} | {eff} |")
    return out


def steps_table(steps: list[dict[str, Any]]) -> list[str]:
    out = ["| step | predicted | median s | speed-up vs step 0 | efficiency | max rel. diff vs reference |",
           "|---|---|---|---|---|---|"]
    for s in steps:
        out.append(f"| {s['step']} | {s['prediction']} | {s['median_s']:.2f} | ×{s['speedup_cpu_vs_step0']:.2f} | "
                   f"{s['efficiency']:.2f} | {s['max_rel_diff_vs_reference']:.1e} |")
    return out


def render(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [f"`{path.as_posix()}` — {_meta_line(data.get('meta', {}))}", ""]
    if "rows" in data:
        lines += matrix_table(data["rows"])
    if "steps" in data:
        lines += steps_table(data["steps"])
    if "samples" in data:
        s = data["samples"]
        lines.append(f"{s['samples']} samples, {s['preset']} {s['size'][1]}×{s['size'][0]} {s['precision']}: "
                     f"{s['samples']} full passes {s.get('full_passes_s', s.get('full_passes_cpu_s')):.2f} s vs "
                     f"prepare + {s['samples']} decodes {s.get('prepare_plus_decodes_s', s.get('prepare_plus_decodes_cpu_s')):.2f} s "
                     f"(×{s['speedup']:.2f}); cache {s['cache_mb']:.0f} MB; decode vs full pass max |diff| "
                     f"{s['max_abs_diff_decode_vs_full']:.1e}")
    if "accuracy" in data:
        a = data["accuracy"]["summary"]
        lines.append(f"{data['accuracy']['images']} val images: fast fp32 vs reference max rel. diff "
                     f"{a['fast_fp32_vs_reference_rel']['max']:.1e}; bf16 vs fp32 PSNR mean "
                     f"{a['psnr_bf16_vs_fp32']['mean']:.1f} dB (min {a['psnr_bf16_vs_fp32']['min']:.1f}); autocast bf16 "
                     f"vs fp32 {a['psnr_autocast_bf16_vs_fp32']['mean']:.1f} dB")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    for path in parser.parse_args().results:
        print("\n".join(render(path)))


if __name__ == "__main__":
    main()
