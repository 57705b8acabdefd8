"""The bright test cases of issue 18, for weights files side by side: DICM 36/49/53/54/58 (the photos
whose unguarded output left [-0.5, 1.5] with one bundled file or another; 36 is a saturated blue
sky), bright saturated patches pasted into dark val photos, and well-exposed val references used as
inputs. Per case: share of raw τ = 0 values outside [-0.5, 1.5] (non-finite counted) with the
file's guard, and for the well-exposed inputs the PSNR of the output against the input.

    python experiments/flow_stability/bright_cases.py NAME=WEIGHTS ... [--shared ../shared] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from llflow import LLFlow
from llflow.metrics import float_to_uint8, psnr

from diagnose import load  # noqa: E402


def pasted(shared: Path) -> dict[str, torch.Tensor]:
    """Dark val photos with bright regions pasted in: a saturated cyan block (a lit pool), a white
    lamp-like disc, and the brightest quarter of DICM 53."""
    val = sorted((shared / "data" / "sice-lowlight" / "val" / "low").glob("*.jpg"))
    cases = {}
    for i, path in enumerate(val[:3]):
        low = load(str(path), 512)
        _, _, h, w = low.shape
        if i == 0:
            low[:, :, h // 4: h // 2, w // 4: 3 * w // 4] = torch.tensor([0.05, 0.85, 0.95]).view(1, 3, 1, 1)
            cases[f"{path.stem}+cyan block"] = low
        elif i == 1:
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 6) ** 2
            low[:, :, disc] = 1.0
            cases[f"{path.stem}+white disc"] = low
        else:
            bright = load(str(shared / "data" / "real-lowlight" / "dicm" / "53.jpg"), 512)
            ph, pw = min(h, bright.shape[2]) // 2, min(w, bright.shape[3]) // 2
            low[:, :, :ph, :pw] = bright[:, :, :ph, :pw]
            cases[f"{path.stem}+DICM 53 corner"] = low
    return cases


def out_share(x: torch.Tensor) -> float:
    return float((~torch.isfinite(x) | (x < -0.5) | (x > 1.5)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dicm = args.shared / "data" / "real-lowlight" / "dicm"
    cases = {f"dicm/{n}": load(str(dicm / f"{n}.jpg")) for n in ("36", "49", "53", "54", "58")}
    cases.update(pasted(args.shared))
    highs = sorted((args.shared / "data" / "sice-lowlight" / "val" / "high").glob("*.jpg"))
    unique = {p.stem.split("_")[0]: p for p in highs}  # one per reference frame
    for stem, path in sorted(unique.items()):
        cases[f"val high {stem}"] = load(str(path), 512)
    report = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        model = LLFlow.from_pretrained(None if path == "default" else path)
        rows = {}
        with torch.no_grad():
            for case, low in cases.items():
                out = model.enhance(low, clamp=False)
                row = {"share_out": out_share(out)}
                if case.startswith("val high"):
                    row["psnr_vs_input"] = psnr(float_to_uint8(out[0].clamp(0, 1).permute(1, 2, 0).numpy()),
                                                float_to_uint8(low[0].permute(1, 2, 0).numpy()))
                rows[case] = row
                print(f"{name:<10} {case:<28} out {row['share_out']:.3%}"
                      + (f"  PSNR vs input {row['psnr_vs_input']:.2f} dB" if "psnr_vs_input" in row else ""), flush=True)
        highs_psnr = [r["psnr_vs_input"] for r in rows.values() if "psnr_vs_input" in r]
        report[name] = {"weights": path, "cases": rows, "mean_psnr_vs_input_high": float(np.mean(highs_psnr)),
                        "cases_over_0.1%": [c for c, r in rows.items() if r["share_out"] > 1e-3]}
        print(f"{name}: mean PSNR vs input on {len(highs_psnr)} val references {np.mean(highs_psnr):.2f} dB; "
              f"cases over 0.1 %: {report[name]['cases_over_0.1%']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
