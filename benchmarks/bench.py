#!/usr/bin/env python
"""LLFlow inference benchmark: time, throughput, peak memory, FLOPs and efficiency.

    python benchmarks/bench.py                        # the default matrix (see DEFAULT_ROWS)
    python benchmarks/bench.py --quick                # LOL_smallNet 400×600 only (~1 min)
    python benchmarks/bench.py --steps                # step-by-step optimisation table
    python benchmarks/bench.py --samples 8            # prepare_condition/decode vs full passes
    python benchmarks/bench.py --accuracy             # fast vs reference (fp32) and bf16 PSNR on val images
    python benchmarks/bench.py --rows "LOL-pc:400x600:bf16:fast" "LOL_smallNet:3840x2160:fp32:fast:tile=1024"
    python benchmarks/bench.py --device cuda          # GPU matrix (fp16/bf16, 4K with and without tiling)

Every row runs in its own subprocess (so its peak RSS is its own) and prints one line of JSON; the
parent prints a table and writes everything to ``--json`` (default benchmarks/results/<time>.json).

What is timed: the network from the 6-channel condition to the raw image (``LLFlow.reverse`` for
``reference``, ``InferenceModel.forward_image`` for ``fast``, ``session.run`` for ``onnx``); tiled
rows time the whole tiled ``enhance`` of the image (hist-eq, per-tile condition, blending).
Median of ``--repeats`` runs after one warm-up run.

Efficiency (the issue's metric): achieved FLOP/s ÷ FLOP/s of a large 3×3 64→64 convolution
(1×64×256×384, channels-last — the faster layout here; fp32) measured **interleaved** with the model
runs in the same process: each repeat times the reference convolution and then the model, the
ratio is taken per pair and the median reported. ``eff_cpu`` does the same with CPU time
(``time.thread_time``; only with ``--threads 1``), which is immune to the machine being shared.
FLOPs are counted with ``torch.utils.flop_counter`` on the reference path (on the meta device, so
large sizes cost nothing) and are the untiled image's FLOPs also for tiled rows (tile overlap counts
as overhead).

Peak memory: CPU — the process's peak RSS (``VmHWM``) after the warm-up run (model, weights, inputs
and Python/torch included; the reference-convolution buffers are allocated afterwards); GPU —
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if (REPO / "src" / "llflow").is_dir():  # measure this checkout, not whatever llflow is installed
    sys.path.insert(0, str(REPO / "src"))
# Channels, height, width of the reference convolution. Its 24 MB output stays below glibc's 32 MB
# mmap threshold, so the reference is not slowed by page faults on every call (a 512×512 one is, by
# ~18 % here: 90 instead of 110 GFLOP/s in fp32), i.e. it measures the arithmetic limit.
REF_CONV = (64, 256, 384)
# glibc: never return freed memory to the kernel (no page-fault + zeroing on every big allocation).
MALLOC_REUSE_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_TOP_PAD_": str(2**28)}
# Row option malloc=NAME: "reuse" never returns memory; t40/t40b/t64: mmap threshold 40/40/64 MiB,
# trim threshold 128/64/256 MiB (big temporaries reused from the heap instead of fresh mappings).
MALLOC_ENVS = {"reuse": MALLOC_REUSE_ENV,
               "t40": {"MALLOC_MMAP_THRESHOLD_": str(40 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20)},
               "t40b": {"MALLOC_MMAP_THRESHOLD_": str(40 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)},
               "t64": {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}}

# preset:HxW:precision:variant[:tile=N][:repeats=N]
DEFAULT_ROWS = [
    "LOL_smallNet:400x600:fp32:reference",
    "LOL_smallNet:400x600:fp32:fast",
    "LOL_smallNet:400x600:bf16:reference",
    "LOL_smallNet:400x600:bf16:fast",
    "LOL_smallNet:400x600:fp32:onnx",
    "LOL_smallNet:1920x1080:fp32:fast:repeats=2",
    "LOL_smallNet:1920x1080:bf16:fast:repeats=2",
    "LOL_smallNet:3840x2160:fp32:fast:tile=1024:repeats=1",
    "LOL_smallNet:3840x2160:bf16:fast:tile=1024:repeats=1",
    "LOL-pc:400x600:fp32:reference:repeats=2",
    "LOL-pc:400x600:fp32:fast:repeats=3",
    "LOL-pc:400x600:bf16:fast:repeats=3",
    "LOL-pc:1920x1080:bf16:fast:tile=1024:repeats=1",
]
QUICK_ROWS = DEFAULT_ROWS[:5]
GPU_ROWS = [
    "LOL-pc:400x600:fp16:reference", "LOL-pc:400x600:fp16:fast", "LOL-pc:400x600:bf16:fast",
    "LOL-pc:400x600:fp32:fast",
    "LOL-pc:3840x2160:fp16:fast:repeats=2", "LOL-pc:3840x2160:fp16:fast:tile=1024:repeats=2",
    "LOL_smallNet:400x600:fp16:fast", "LOL_smallNet:3840x2160:fp16:fast:repeats=2",
    "LOL_smallNet:3840x2160:fp16:fast:tile=1024:repeats=2",
]


# ================================================================================================
# Row specification


def parse_row(text: str, defaults: dict[str, Any]) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) < 4:
        raise SystemExit(f"row '{text}': expected preset:HxW:precision:variant[:tile=N][:repeats=N]")
    h, w = (int(v) for v in parts[1].lower().split("x"))
    row = dict(defaults)
    row.update(preset=parts[0], height=h, width=w, precision=parts[2], variant=parts[3], tile=None)
    for extra in parts[4:]:
        key, _, value = extra.partition("=")
        if key in ("tile", "repeats", "pad", "threads"):
            row[key] = int(value)
        elif key == "omp":
            row["omp_wait"] = value
        elif key == "malloc":  # glibc settings from MALLOC_ENVS: keep freed memory (fewer page faults, higher RSS)
            if value not in MALLOC_ENVS:
                raise SystemExit(f"row '{text}': malloc must be one of {', '.join(MALLOC_ENVS)}")
            row["malloc"] = value
        elif key == "thp":
            row["thp"] = bool(int(value))
        else:
            raise SystemExit(f"row '{text}': unknown option '{extra}'")
    return row


# ================================================================================================
# Worker (one row, in its own process)


def _rss_kb(field: str = "VmHWM") -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_flops(preset: str, height: int, width: int) -> int:
    """FLOPs of one reverse pass of the reference path (multiples of 8), counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llflow import LLFlow

    with torch.device("meta"):
        model = LLFlow.from_config(preset).eval()
    model.mark_initialized()
    lq = torch.empty(1, 6, _up8(height), _up8(width), device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.reverse(lq)
    return int(counter.get_total_flops())


def _up8(v: int) -> int:
    return -(-v // 8) * 8


def _make_model(row: dict[str, Any]):
    import torch

    from llflow import LLFlow

    torch.manual_seed(0)
    if row.get("weights"):
        model = LLFlow.from_pretrained(row["weights"])
    else:
        model = LLFlow.from_config(row["preset"]).eval()
        model.mark_initialized()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(row["device"])


def _low_image(row: dict[str, Any]):
    """A deterministic, natural-looking dark test image (smooth gradients + texture + noise)."""
    import torch

    h, w = row["height"], row["width"]
    gen = torch.Generator().manual_seed(1)
    yy = torch.linspace(0, 1, h)[:, None]
    xx = torch.linspace(0, 1, w)[None, :]
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 3 * yy), 0.5 + 0.4 * torch.cos(5 * yy - 2 * xx),
                        0.4 + 0.3 * torch.sin(9 * xx * yy)])
    noise = torch.rand(3, h, w, generator=gen)
    return ((0.15 * base + 0.03 * noise).clamp(0, 1) * 255).round()[None] / 255


class _Timer:
    def __init__(self, device: str, threads: int) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.cpu_clock = time.thread_time if threads == 1 else time.process_time

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, float]:
        self.sync()
        w0, c0 = time.perf_counter(), self.cpu_clock()
        fn()
        self.sync()
        return time.perf_counter() - w0, self.cpu_clock() - c0


def _reference_conv(dtype_name: str, device: str):
    import torch
    import torch.nn.functional as F

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    c, h, w = REF_CONV
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, h, w, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(c, c, 3, 3, generator=gen) * 0.05).to(device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    flops = 2 * c * c * 9 * h * w

    def run() -> None:
        with torch.no_grad():
            F.conv2d(x, wt, padding=1)

    return run, flops


def _build_runner(row: dict[str, Any], model) -> tuple[Callable[[], Any], dict[str, Any]]:
    """The timed function for a row, and notes about it."""
    import torch

    from llflow.preprocess import equalize_histogram_tensor, make_condition

    device, prec, variant = row["device"], row["precision"], row["variant"]
    low = _low_image(row)
    notes: dict[str, Any] = {}
    h8, w8 = _up8(row["height"]), _up8(row["width"])
    if row.get("tile"):
        return _tiled_runner(row, model, low, notes)
    from llflow.preprocess import pad_to_multiple

    histeq = equalize_histogram_tensor(low)
    lq = make_condition(pad_to_multiple(low, 8), pad_to_multiple(histeq, 8)).to(device)
    assert lq.shape[-2:] == (h8, w8)
    if variant in ("reference", "reference-cl"):
        autocast = None
        if prec != "fp32":
            dtype = torch.bfloat16 if prec == "bf16" else torch.float16
            autocast = torch.autocast(device.split(":")[0], dtype=dtype)
            notes["how"] = f"torch.autocast({prec})"
        if variant == "reference-cl":
            model = model.to(memory_format=torch.channels_last)
            lq = lq.contiguous(memory_format=torch.channels_last)

        def run() -> Any:
            with torch.no_grad():
                if autocast is None:
                    return model.reverse(lq)[0]
                with autocast:
                    return model.reverse(lq)[0]

        return run, notes
    if variant.startswith("fast"):
        options = {"fast": {}, "fast-aten": {"fused": False}, "fast-nchw": {"fused": False, "channels_last": False},
                   "fast-noreuse": {"dense_workspace": False}, "fast-nofold": {"fold_residuals": False}}
        if variant not in options:
            raise SystemExit(f"unknown variant {variant}")
        engine = model.prepare_for_inference(prec, **options[variant])
        notes["engine"] = repr(engine)
        return (lambda: engine.forward_image(lq)), notes
    if variant == "ort-engine":  # what `llflow enhance --engine onnxruntime` runs (cached export)
        from llflow.ort_engine import OrtEngine

        if prec != "fp32" or device != "cpu":
            raise SystemExit("ort-engine rows are fp32 on the CPU")
        engine = OrtEngine(model.cpu(), threads=row["threads"])
        notes["engine"] = repr(engine)
        return (lambda: engine.forward_image(lq)), notes
    if variant == "onnx":
        import tempfile

        from llflow.export import export_onnx, ort_session

        if prec != "fp32":
            raise SystemExit("onnx rows are fp32")
        path = Path(tempfile.mkdtemp()) / "model.onnx"
        report = export_onnx(model.cpu(), path, check=False)
        # No spinning: ORT's idle workers would otherwise keep spinning after a run and slow the
        # reference convolution measured right after it (inflating the ratio).
        session = ort_session(path, threads=row["threads"], spinning=False)
        feeds = {"lq": lq.cpu().numpy()}
        notes["onnx_bytes"] = report["bytes"]
        with torch.no_grad():
            ref = model.reverse(lq)[0].cpu().numpy()
        out = session.run(["image"], feeds)[0]
        import numpy as np

        notes["onnx_vs_torch_rel"] = float(np.abs(out - ref).max() / np.abs(ref).max())
        return (lambda: session.run(["image"], feeds)), notes
    raise SystemExit(f"unknown variant {variant}")


def _tiled_runner(row: dict[str, Any], model, low, notes: dict[str, Any]):
    """Tiled enhance of the whole image: the enhance engineer's tiler when available
    (``llflow.inference.Enhancer.decode``), else a minimal loop (overlap + linear blend)."""
    import torch

    tile, pad = row["tile"], row.get("pad") or 32
    device, prec, variant = row["device"], row["precision"], row["variant"]
    net = model
    enh_precision = prec
    if variant.startswith("fast"):
        net = model.prepare_for_inference(prec, fused=(variant == "fast"))
        enh_precision = "fp32"  # the engine does its own reduced precision: no autocast on top
    try:
        from llflow.inference import Enhancer

        engine = "onnxruntime" if variant == "ort-engine" else "fast"
        enhancer = Enhancer(net, torch.device(device), enh_precision, engine=engine)
        enhancer.prepare_engine()  # the onnxruntime export is set-up, not timed
        notes["tiler"] = f"llflow.inference.Enhancer.decode(tile={tile}, tile_pad={pad}, engine={engine})"

        def run() -> Any:
            return enhancer.decode(low, None, None, tile=tile, tile_pad=pad)

        return run, notes
    except Exception as exc:  # pragma: no cover - fallback when the tiler is not there / changed
        notes["tiler"] = f"minimal loop in bench.py (Enhancer unavailable: {type(exc).__name__})"

    def run_minimal() -> Any:
        h, w = low.shape[-2:]
        out = torch.zeros(1, 3, h, w)
        weight = torch.zeros(1, 1, h, w)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                ey0, ex0 = max(0, y0 - pad), max(0, x0 - pad)
                ey1, ex1 = min(h, y0 + tile + pad), min(w, x0 + tile + pad)
                with torch.no_grad():
                    res = net.enhance(low[..., ey0:ey1, ex0:ex1].to(device)).float().cpu()
                out[..., ey0:ey1, ex0:ex1] += res
                weight[..., ey0:ey1, ex0:ex1] += 1
        return out / weight

    return run_minimal, notes


def run_worker(row: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(row["threads"])
    device = row["device"]
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = dict(row)
    result["torch"] = torch.__version__
    result["flops"] = count_flops(row["preset"], row["height"], row["width"])
    model = _make_model(row)
    run, notes = _build_runner(row, model)
    result.update(notes)
    timer = _Timer(device, row["threads"])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result["rss_before_mb"] = _rss_kb("VmRSS") / 1024
    big = row["height"] * row["width"] > 2_500_000 or bool(row.get("tile"))
    walls, cpus, r_walls, r_cpus, rl_walls = [], [], [], [], []
    if big:  # one run is minutes: no separate warm-up (first-call overheads, < 1 s, are included)
        result["warmup"] = "none (first timed run includes one-off kernel generation)"
        w, c = timer(run)
        walls.append(w)
        cpus.append(c)
    else:
        result["warmup"] = "1 run"
        result["warmup_s"] = timer(run)[0]
    # Peak memory of the model alone (the reference-convolution buffers are allocated afterwards).
    if device.startswith("cuda"):
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["mem_kind"] = "cuda max_allocated"
    else:
        result["peak_mem_mb"] = _rss_kb("VmHWM") / 1024
        result["mem_kind"] = "peak RSS (process)"
    ref32, ref_flops = _reference_conv("fp32", device)
    ref_lp = _reference_conv(row["precision"], device)[0] if row["precision"] != "fp32" else None
    ref32()
    if ref_lp:
        ref_lp()

    def reference_pace() -> None:
        rw, rc = min(timer(ref32), timer(ref32))  # best of 2 short calls: the machine's current pace
        r_walls.append(rw)
        r_cpus.append(rc)
        if ref_lp:
            rl_walls.append(min(timer(ref_lp)[0], timer(ref_lp)[0]))

    if walls:  # pair the first (big) run with a reference measured right after it
        reference_pace()
    started = time.perf_counter()
    while len(walls) < row["repeats"]:
        reference_pace()
        w, c = timer(run)
        walls.append(w)
        cpus.append(c)
        if len(walls) >= 2 and time.perf_counter() - started > row["budget_s"]:
            break
    flops = result["flops"]
    pixels = row["height"] * row["width"]
    med = statistics.median(walls)
    result.update(
        times_s=walls, cpu_times_s=cpus, ref_times_s=r_walls, ref_cpu_times_s=r_cpus,
        median_s=med, median_cpu_s=statistics.median(cpus), spread=(max(walls) - min(walls)) / med,
        mpix_per_s=pixels / med / 1e6, gflops_per_s=flops / med / 1e9,
        ref_gflops_per_s=ref_flops / statistics.median(r_walls) / 1e9,
        efficiency=statistics.median([(flops / w) / (ref_flops / r) for w, r in zip(walls, r_walls)]),
    )
    if row["threads"] == 1 and not device.startswith("cuda"):
        result["efficiency_cpu"] = statistics.median([(flops / c) / (ref_flops / r) for c, r in zip(cpus, r_cpus)])
        result["ref_gflops_per_s_cpu"] = ref_flops / statistics.median(r_cpus) / 1e9
    if rl_walls:
        result["ref_lp_gflops_per_s"] = ref_flops / statistics.median(rl_walls) / 1e9
        result["efficiency_vs_lp_ref"] = statistics.median(
            [(flops / w) / (ref_flops / r) for w, r in zip(walls, rl_walls)])
    return result


# ================================================================================================
# Step-by-step table (one process, all variants interleaved round-robin)


def run_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from llflow.preprocess import make_condition

    torch.set_num_threads(args.threads)
    preset, (h, w) = args.steps_preset, args.steps_size
    row = {"preset": preset, "height": h, "width": w, "device": "cpu", "weights": args.weights}
    model = _make_model(row)
    flops = count_flops(preset, h, w)
    low = _low_image(row)
    lq = make_condition(low)
    lq_cl = lq.contiguous(memory_format=torch.channels_last)
    model_cl = _make_model(row).to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref_out = model.reverse(lq)[0]
    steps: list[tuple[str, str, Callable[[], Any]]] = []

    def ref_run(m, x):
        return lambda: m.reverse(x)[0]

    steps.append(("0 reference modules (official structure), NCHW fp32", "-", ref_run(model, lq)))
    steps.append(("1 reference modules, channels-last weights+input", "-20% time (convs 90->105 GFLOP/s, no slow_conv2d)",
                  ref_run(model_cl, lq_cl)))
    e_nchw = model.prepare_for_inference("fp32", fused=False, channels_last=False)
    steps.append(("2 engine NCHW: folded ActNorm/gains/0.2, composed f64 1x1 inverses, split fAffine, head before upsample",
                  "-5% vs 0 (fewer element-wise passes)", lambda: e_nchw.forward_image(lq)))
    e_aten = model.prepare_for_inference("fp32", fused=False)
    steps.append(("3 engine channels-last", "-25% vs 0", lambda: e_aten.forward_image(lq)))
    e_fused = model.prepare_for_inference("fp32", dense_workspace=False)
    steps.append(("4 + oneDNN fused epilogues (bias+act+residual in the conv)", "-5% vs 3",
                  lambda: e_fused.forward_image(lq)))
    e_reuse = model.prepare_for_inference("fp32", fold_residuals=False)
    steps.append(("5 + one reused buffer for the dense-block concatenations",
                  "-2% at 0.24 MP (only the 160-ch concat is above the 32 MB mmap threshold)",
                  lambda: e_reuse.forward_image(lq)))
    e_fast = model.prepare_for_inference("fp32")
    steps.append(("5b + dense-block skip connections inside conv5's weights = fast fp32",
                  "-1% vs 5 (plain conv instead of oneDNN's ~2% slower residual-add variant; one pass less per RRDB)",
                  lambda: e_fast.forward_image(lq)))
    e_bf16_nofold = model.prepare_for_inference("bf16", fold_residuals=False)
    steps.append(("6 fast bf16 (encoder+coupling convs bf16; z, affine, 1x1, head fp32), skip connections as residual adds",
                  "x1.9 vs 5", lambda: e_bf16_nofold.forward_image(lq)))
    e_bf16 = model.prepare_for_inference("bf16")
    steps.append(("6b + skip connections inside conv5's weights (rounded to bf16) = fast bf16",
                  "-2% vs 6 (as 5b; bf16's residual-add variant is 4-5% slower than its plain conv)",
                  lambda: e_bf16.forward_image(lq)))
    outputs = {}
    with torch.no_grad():
        for name, _, fn in steps:
            outputs[name] = fn()
    timer = _Timer("cpu", args.threads)
    ref32, ref_flops = _reference_conv("fp32", "cpu")
    ref32()
    times: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name, _, _ in steps}
    for _ in range(args.repeats):
        for name, _, fn in steps:
            rw, rc = min(timer(ref32), timer(ref32))
            w, c = timer(fn)
            times[name].append((w, c, rw, rc))
    results = []
    base = None
    for name, prediction, _ in steps:
        t = times[name]
        med_w = statistics.median(x[0] for x in t)
        med_c = statistics.median(x[1] for x in t)
        eff = statistics.median((flops / x[0]) / (ref_flops / x[2]) for x in t)
        eff_c = statistics.median((flops / x[1]) / (ref_flops / x[3]) for x in t)
        out = outputs[name].float()
        rel = float((out - ref_out).abs().max() / ref_out.abs().max())
        base = base or med_c
        results.append({"step": name, "prediction": prediction, "median_s": med_w, "median_cpu_s": med_c,
                        "speedup_cpu_vs_step0": base / med_c, "efficiency": eff, "efficiency_cpu": eff_c,
                        "max_rel_diff_vs_reference": rel, "times": t})
    return results


def print_steps(results: list[dict[str, Any]], threads: int) -> None:
    clock = "cpu s" if threads == 1 else "cpu s (all threads)"
    print(f"\n{'step':<100} {'wall s':>7} {clock:>8} {'×':>5} {'eff':>5} {'eff cpu':>7} {'max rel diff':>12}")
    for r in results:
        print(f"{r['step'][:100]:<100} {r['median_s']:7.3f} {r['median_cpu_s']:8.3f} {r['speedup_cpu_vs_step0']:5.2f} "
              f"{r['efficiency']:5.2f} {r['efficiency_cpu']:7.2f} {r['max_rel_diff_vs_reference']:12.1e}")


# ================================================================================================
# Samples: prepare_condition + decode vs full passes


def run_samples(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from llflow.preprocess import make_condition

    torch.set_num_threads(args.threads)
    preset, (h, w) = args.steps_preset, args.steps_size
    row = {"preset": preset, "height": h, "width": w, "device": "cpu", "weights": args.weights}
    model = _make_model(row)
    engine = model.prepare_for_inference(args.samples_precision)
    lq = make_condition(_low_image(row))
    n = args.samples
    gen = torch.Generator().manual_seed(0)
    eps = [torch.randn(1, 192, h // 8, w // 8, generator=gen) for _ in range(n)]
    timer = _Timer("cpu", args.threads)

    def full() -> None:
        for e in eps:
            engine.forward_image(lq, temperature=0.8, eps=e)

    def cached() -> None:
        prepared = engine.prepare_condition(lq)
        for e in eps:
            engine.decode(prepared, temperature=0.8, eps=e)

    prepared = engine.prepare_condition(lq)
    a = engine.forward_image(lq, temperature=0.8, eps=eps[0])
    b = engine.decode(prepared, temperature=0.8, eps=eps[0])
    times: dict[str, list[tuple[float, float]]] = {"full_passes": [], "prepare_plus_decodes": [], "prepare": [],
                                                   "decode": []}
    for _ in range(args.repeats):
        times["full_passes"].append(timer(full))
        times["prepare_plus_decodes"].append(timer(cached))
        times["prepare"].append(timer(lambda: engine.prepare_condition(lq)))
        times["decode"].append(timer(lambda: engine.decode(prepared, temperature=0.8, eps=eps[0])))
    res: dict[str, Any] = {"preset": preset, "size": [h, w], "precision": args.samples_precision, "samples": n,
                           "threads": args.threads, "cache_mb": prepared.nbytes() / 2**20,
                           "max_abs_diff_decode_vs_full": float((a - b).abs().max())}
    for key, values in times.items():
        res[f"{key}_s"] = statistics.median(v[0] for v in values)
        res[f"{key}_cpu_s"] = statistics.median(v[1] for v in values)
    res["speedup"] = res["full_passes_s"] / res["prepare_plus_decodes_s"]
    return res


# ================================================================================================
# Accuracy: fast fp32 vs reference, bf16 vs fp32 PSNR on the val images


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    import glob

    import cv2
    import numpy as np
    import torch

    from llflow import LLFlow

    torch.set_num_threads(args.threads)
    if args.weights:
        model = LLFlow.from_pretrained(args.weights)
    else:
        torch.manual_seed(0)
        model = LLFlow.from_config(args.steps_preset).eval()
        model.mark_initialized()
    e32, e16 = model.prepare_for_inference("fp32"), model.prepare_for_inference("bf16")
    files = sorted(glob.glob(os.path.join(args.val_dir, "*")))[: args.max_images]
    if not files:
        raise SystemExit(f"no images in {args.val_dir}")
    rows = []
    for f in files:
        img = cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
        low = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        ref = model.enhance(low, clamp=False)
        o32 = e32.enhance(low, clamp=False)
        o16 = e16.enhance(low)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            oac = model.enhance(low).float()
        c32 = o32.clamp(0, 1)

        def psnr(a, b) -> float:
            mse = float(((a - b) ** 2).mean())
            return 10 * math.log10(1 / mse) if mse > 0 else float("inf")

        rows.append({"image": os.path.basename(f),
                     "fast_fp32_vs_reference_rel": float((o32 - ref).abs().max() / ref.abs().max()),
                     "psnr_bf16_vs_fp32": psnr(o16, c32), "psnr_autocast_bf16_vs_fp32": psnr(oac, ref.clamp(0, 1))})
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "min": float(np.min([r[k] for r in rows])),
                   "max": float(np.max([r[k] for r in rows]))}
               for k in ("fast_fp32_vs_reference_rel", "psnr_bf16_vs_fp32", "psnr_autocast_bf16_vs_fp32")}
    return {"weights": args.weights or f"random {args.steps_preset}", "images": len(rows), "summary": summary,
            "rows": rows}


# ================================================================================================
# Parent


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    head = (f"{'preset':<13}{'size':>10} {'prec':<5}{'variant':<10}{'tile':>5} {'median s':>9} {'cpu s':>8} "
            f"{'spread':>6} {'MP/s':>6} {'peak MB':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'ref':>6} {'eff':>5} {'effcpu':>6}")
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['preset']:<13}{r['height']}x{r['width']:<5} {r['precision']:<5}{r['variant']:<10} ERROR {r['error'][:80]}")
            continue
        size = f"{r['width']}x{r['height']}"
        print(f"{r['preset']:<13}{size:>10} {r['precision']:<5}{r['variant']:<10}{_fmt(r.get('tile'), 'd') if r.get('tile') else '-':>5} "
              f"{r['median_s']:9.3f} {r['median_cpu_s']:8.3f} {r['spread']:6.0%} {r['mpix_per_s']:6.3f} "
              f"{r['peak_mem_mb']:8.0f} {r['flops'] / 1e9:8.1f} {r['gflops_per_s']:8.1f} {r['ref_gflops_per_s']:6.1f} "
              f"{r['efficiency']:5.2f} {_fmt(r.get('efficiency_cpu'), '6.2f'):>6}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", help="preset:HxW:precision:variant[:tile=N][:repeats=N][:threads=N]"
                                            "[:omp=passive|active|default][:malloc=reuse|t40|t40b|t64][:thp=1] "
                                            "(variants: reference, reference-cl, fast, fast-aten, fast-nchw, fast-noreuse, fast-nofold, onnx, ort-engine)")
    p.add_argument("--quick", action="store_true", help="LOL_smallNet 400×600 rows only")
    p.add_argument("--steps", action="store_true", help="step-by-step optimisation table (one process)")
    p.add_argument("--samples", type=int, default=0, help="time N samples: prepare+decode vs N full passes")
    p.add_argument("--samples-precision", default="fp32")
    p.add_argument("--accuracy", action="store_true", help="fast-vs-reference and bf16-vs-fp32 PSNR on val images")
    p.add_argument("--val-dir", default=str(REPO.parent / "shared/data/sice-lowlight/val/low"))
    p.add_argument("--max-images", type=int, default=1000)
    p.add_argument("--steps-preset", default="LOL_smallNet")
    p.add_argument("--steps-size", default="400x600")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU rows: fp16/bf16, 4K with/without tiling)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per row after one warm-up (default 5)")
    p.add_argument("--budget-s", type=float, default=120.0, help="stop repeating a row after this long (min 2 runs)")
    p.add_argument("--weights", help="checkpoint to load (default: random weights; timing does not depend on them)")
    p.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1 (huge pages for big tensors) in workers")
    p.add_argument("--malloc-reuse", action="store_true",
                   help=f"glibc keeps freed memory in the workers ({' '.join(f'{k}={v}' for k, v in MALLOC_REUSE_ENV.items())})")
    p.add_argument("--omp-wait", default="passive", choices=["passive", "active", "default"],
                   help="OMP_WAIT_POLICY for the runs (default passive: idle OpenMP threads sleep instead of "
                        "spinning — essential when another process shares the cores; 'default' leaves it unset)")
    p.add_argument("--json", type=Path, help="where to write results (default benchmarks/results/<time>.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps_size = tuple(int(v) for v in args.steps_size.lower().split("x"))
    if args.omp_wait != "default" and not args.worker:  # before torch (libgomp reads it when loaded)
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()

    if args.worker:
        try:
            result = run_worker(json.loads(args.worker))
        except Exception as exc:  # report, don't lose the other rows
            import traceback

            result = dict(json.loads(args.worker), error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())
        print("RESULT " + json.dumps(result))
        return 0

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.json or HERE / "results" / f"{stamp}.json"
    meta = _machine_info(args)
    payload: dict[str, Any] = {"meta": meta}
    if args.steps:
        payload["steps"] = run_steps(args)
        print_steps(payload["steps"], args.threads)
    if args.samples:
        payload["samples"] = run_samples(args)
        print(json.dumps(payload["samples"], indent=1))
    if args.accuracy:
        payload["accuracy"] = run_accuracy(args)
        print(json.dumps(payload["accuracy"]["summary"], indent=1))
    rows = args.rows
    if rows is None and not (args.steps or args.samples or args.accuracy):
        rows = QUICK_ROWS if args.quick else (GPU_ROWS if args.device.startswith("cuda") else DEFAULT_ROWS)
    if rows:
        defaults = {"device": args.device, "threads": args.threads, "repeats": args.repeats,
                    "budget_s": args.budget_s, "weights": args.weights, "omp_wait": args.omp_wait}
        results = []
        env = dict(os.environ)
        if args.thp:
            env["THP_MEM_ALLOC_ENABLE"] = "1"
        if args.malloc_reuse:
            env.update(MALLOC_REUSE_ENV)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        for text in rows:
            row = parse_row(text, defaults)
            row_env = dict(env)
            row_env.pop("OMP_WAIT_POLICY", None)
            if row["omp_wait"] != "default":
                row_env["OMP_WAIT_POLICY"] = row["omp_wait"].upper()
            if row.get("thp"):
                row_env["THP_MEM_ALLOC_ENABLE"] = "1"
            if row.get("malloc"):
                row_env.update(MALLOC_ENVS[row["malloc"]])
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(row)],
                                  capture_output=True, text=True, env=row_env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not lines:
                result = dict(row, error=f"worker failed (rc {proc.returncode}): {proc.stderr.strip()[-400:]}")
            else:
                result = json.loads(lines[-1][len("RESULT "):])
            result["row_wall_s"] = time.perf_counter() - started
            results.append(result)
            _print_row(result)
        payload["rows"] = results
        print_table(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out_path}")
    return 0


def _print_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {r['preset']} {r['height']}x{r['width']} {r['precision']} {r['variant']}: ERROR {r['error'][:300]}",
              flush=True)
    else:
        print(f"  {r['preset']} {r['width']}x{r['height']} {r['precision']} {r['variant']} tile={r.get('tile')}: "
              f"{r['median_s']:.3f} s (cpu {r['median_cpu_s']:.3f}), eff {r['efficiency']:.2f}, "
              f"peak {r['peak_mem_mb']:.0f} MB  [{r['row_wall_s']:.0f} s]", flush=True)


def _machine_info(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {"time": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
                            "torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                            "device": args.device, "ref_conv": f"1x{REF_CONV[0]}x{REF_CONV[1]}x{REF_CONV[2]} 3x3 "
                                                               f"{REF_CONV[0]}->{REF_CONV[0]} channels-last"}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
        info["avx512_bf16"] = "avx512_bf16" in text
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    if args.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


if __name__ == "__main__":
    sys.exit(main())
