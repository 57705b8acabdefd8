"""NLL vs L1 training of the same network (the paper's RQ4), and whether sampling works.

Prints a table of PSNR / SSIM / LPIPS on sice-lowlight val (raw and GT-mean), the temperature-sampling
checks, and writes ``<out>/rq4.json`` and ``<out>/rq4_figure.png`` (input | L1 | NLL τ=0 | two NLL
samples at τ=0.8 | reference).

    python experiments/rq4_nll_vs_l1.py      # the bundled NLL model vs experiments/weights/l1_sice_smallnet_it1200.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from llflow.data import find_pairs
from llflow.evaluation import comparison_grid, evaluate, format_table, model_method
from llflow.io import read_image
from llflow.metrics import float_to_uint8, psnr
from llflow.model import LLFlow
from llflow.preprocess import pad_to_multiple
from llflow.preprocess import equalize_histogram_tensor, make_condition, to_uint8


def _load(spec: str) -> LLFlow:
    return LLFlow.from_pretrained(None if spec == "default" else spec)


def _tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255.0


def _u8(t: torch.Tensor) -> np.ndarray:
    return float_to_uint8(t[0].permute(1, 2, 0).clamp(0, 1).numpy())


def _samples(model: LLFlow, x: torch.Tensor, n: int, temperature: float, seed: int) -> torch.Tensor:
    """n samples z = μ + τ·ε of one image: the encoder runs once (fast engine, prepare + decode)."""
    h, w = x.shape[-2:]
    m = model.config.multiple
    engine = model.prepare_for_inference("fp32")
    lq = make_condition(pad_to_multiple(x, m), pad_to_multiple(equalize_histogram_tensor(x), m))
    prepared = engine.prepare_condition(lq)
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([engine.decode(prepared, temperature=temperature, generator=gen)[..., :h, :w].clamp(0, 1)
                      for _ in range(n)])


def sampling_checks(model: LLFlow, pairs, n_samples: int = 8, temperature: float = 0.8) -> dict:
    """Per image: PSNR of τ=0 and of the mean of n samples (vs reference), and how much samples differ."""
    rows = []
    for pair in pairs:
        low, gt = to_uint8(read_image(pair.low).rgb), to_uint8(read_image(pair.high).rgb)
        x = _tensor(low)
        mean_out = model.enhance(x)
        samples = _samples(model, x, n_samples, temperature, seed=0)
        pairwise = [float((samples[i] - samples[j]).abs().mean() * 255)
                    for i in range(n_samples) for j in range(i + 1, n_samples)]
        rows.append({"image": pair.name, "psnr_tau0": psnr(_u8(mean_out), gt),
                     "psnr_sample_mean": psnr(_u8(samples.mean(0, keepdim=True)), gt),
                     "psnr_single_sample": float(np.mean([psnr(_u8(s[None]), gt) for s in samples])),
                     "pairwise_mean_abs_diff_u8": float(np.mean(pairwise)),
                     "pixel_std_over_samples_u8": float(samples.std(0).mean() * 255)})
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    return {"per_image": rows, "mean": summary, "n_samples": n_samples, "temperature": temperature}


def figure(nll: LLFlow, l1: LLFlow | None, pairs, path: Path, temperature: float = 0.8) -> None:
    previews, names = [], (["L1"] if l1 else []) + ["NLL τ=0", f"NLL τ={temperature} #1", f"NLL τ={temperature} #2"]
    for pair in pairs:
        low, gt = to_uint8(read_image(pair.low).rgb), to_uint8(read_image(pair.high).rgb)
        x = _tensor(low)
        cells = [low] + ([_u8(l1.enhance(x))] if l1 else []) + [_u8(nll.enhance(x))]
        cells += [_u8(s[None]) for s in _samples(nll, x, 2, temperature, seed=1)]
        previews.append(cells + [gt])
    comparison_grid(previews, names, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nll", default="default", help="NLL-trained checkpoint (default: the bundled model)")
    parser.add_argument("--l1", default="experiments/weights/l1_sice_smallnet_it1200.safetensors",
                        help="L1-trained checkpoint of the same network (default: the one trained for RQ4)")
    parser.add_argument("--data", default="../shared/data/sice-lowlight/val")
    parser.add_argument("--output", type=Path, default=Path("experiments/results"))
    parser.add_argument("--figure-images", type=int, default=4)
    parser.add_argument("--limit", type=int, help="only the first N pairs (quick checks)")
    args = parser.parse_args()
    pairs = find_pairs(args.data)[: args.limit]
    nll = _load(args.nll)
    methods = [model_method("nll", None if args.nll == "default" else args.nll)]
    l1 = _load(args.l1) if args.l1 else None
    if args.l1:
        methods.append(model_method("l1", args.l1))
    summary, rows = evaluate(pairs, methods)
    print(format_table(summary))
    sampling = sampling_checks(nll, pairs)
    m = sampling["mean"]
    print(f"\nsampling at τ={sampling['temperature']}, {sampling['n_samples']} samples per image (val, {len(pairs)} images):")
    print(f"  PSNR τ=0 {m['psnr_tau0']:.2f} dB · PSNR of the sample mean {m['psnr_sample_mean']:.2f} dB "
          f"(Δ {m['psnr_sample_mean'] - m['psnr_tau0']:+.2f}) · single sample {m['psnr_single_sample']:.2f} dB")
    print(f"  samples differ by {m['pairwise_mean_abs_diff_u8']:.2f} grey levels on average "
          f"(per-pixel std {m['pixel_std_over_samples_u8']:.2f})")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "rq4.json").write_text(json.dumps({"metrics": summary, "sampling": sampling}, indent=2))
    figure(nll, l1, pairs[:: max(1, len(pairs) // args.figure_images)][: args.figure_images],
           args.output / "rq4_figure.png")
    print(f"wrote {args.output / 'rq4.json'} and {args.output / 'rq4_figure.png'}")


if __name__ == "__main__":
    main()
