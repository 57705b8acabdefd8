"""Paired comparison of two models scored by ``score.py``: per metric the mean difference (B − A) over
the images both were scored on, its bootstrap 90 % interval (the images resampled together, so the
scene-to-scene spread that dominates each model's own interval cancels), and on how many images B
is better. Reads the per-image rows of the JSON files; computes nothing on images.

    python experiments/campaign/compare.py A.json[:NAME] B.json[:NAME] [--json out.json]

NAME picks a model when a file holds several (default: its only, or first, model).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from score import bootstrap_interval

# +1: higher is better; -1: lower is better.
DIRECTION = {"psnr": 1, "ssim": 1, "lpips": -1, "psnr_gtmean": 1, "ssim_gtmean": 1, "lpips_gtmean": -1, "nll": -1}


def per_image(spec: str) -> tuple[str, dict[str, dict]]:
    path, _, name = spec.partition(":")
    models = json.loads(Path(path).read_text())["models"]
    if name and name not in models:
        raise SystemExit(f"{path}: no model named {name!r} (it has {', '.join(models)})")
    name = name or next(iter(models))
    return name, {row["image"]: row for row in models[name]["per_image"]}


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict[str, dict]:
    images = sorted(set(a) & set(b))
    if not images:
        raise SystemExit("the two files have no image in common")
    result = {}
    for metric, sign in DIRECTION.items():
        if metric not in a[images[0]] or metric not in b[images[0]]:
            continue
        diffs = [b[i][metric] - a[i][metric] for i in images]
        low, high = bootstrap_interval(diffs)
        result[metric] = {"mean_diff": float(np.mean(diffs)), "ci90": [low, high],
                          "b_better": int(sum(sign * d > 0 for d in diffs)), "images": len(images)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    (name_a, a), (name_b, b) = per_image(args.a), per_image(args.b)
    result = compare(a, b)
    print(f"{name_b} - {name_a} (paired over the images, bootstrap 90 % interval; better = on how many images)")
    for metric, r in result.items():
        print(f"  {metric:12s} {r['mean_diff']:+.4f} [{r['ci90'][0]:+.4f}, {r['ci90'][1]:+.4f}]  "
              f"better on {r['b_better']}/{r['images']}")
    if args.json:
        args.json.write_text(json.dumps({"a": f"{args.a}", "b": f"{args.b}", "difference_b_minus_a": result},
                                        indent=1))


if __name__ == "__main__":
    main()
