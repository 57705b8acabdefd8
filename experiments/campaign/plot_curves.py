"""The campaign's learning curves: val NLL, PSNR, SSIM and LPIPS against iterations and against
CPU-hours, for every run folder under ``logs/`` (each with a ``log.jsonl`` of train/val records).

    python experiments/campaign/plot_curves.py [--logs experiments/campaign/logs] [--out experiments/campaign/curves.png]

Needs matplotlib (an experiments-only tool, not a dependency of the package). A run's
``offset.json`` (optional: ``{"iterations": N, "cpu_h": H, "start": {metric: value}}``) places it after
the training that produced its start weights, so stages line up on the campaign's axes. A run trained
without the trainer's validation names its ``score.py`` result instead (``"score_file"``, relative to
this folder): its scores are drawn at the run's last iteration and CPU-hours.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = (("nll", "val NLL (bits/pixel)"), ("psnr", "val PSNR (dB)"), ("ssim", "val SSIM (grey)"),
           ("lpips", "val LPIPS-alex"))


def read_run(folder: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    offset_path = folder / "offset.json"
    offset = json.loads(offset_path.read_text()) if offset_path.is_file() else {}
    val = [r for r in records if r["kind"] == "val"]
    if not val and "score_file" in offset:
        val = [scored_end(records, Path(__file__).resolve().parent / offset["score_file"])]
    return val, offset


def scored_end(records: list[dict], score_file: Path) -> dict:
    """A val record for a run scored after training by ``score.py`` (one model in the file)."""
    last = [r for r in records if r["kind"] == "train"][-1]
    (model,) = json.loads(score_file.read_text())["models"].values()
    means = {k: v["mean"] for k, v in model["summary"].items() if isinstance(v, dict) and "mean" in v}
    return {"kind": "val", "iter": last["iter"], "cpu_h": last["cpu_h"], **means}


def run_order(folder: Path) -> tuple[int, int, str]:
    """The lineage (main_s7, main_s8, …, in session order, not string order) first, then the pilots,
    so each pilot is drawn from where it forked."""
    if folder.name.startswith("main"):
        return (0, int("".join(c for c in folder.name if c.isdigit()) or 0), folder.name)
    return (1, 0, folder.name)


def only_new(val: list[dict], drawn: set, start: dict | None) -> tuple[list[dict], dict | None]:
    """A resumed or forked run's log repeats its parent's records: keep the records no earlier run drew,
    plus the last repeated one as the start of the line (so it joins its parent's line)."""
    fresh = [i for i, r in enumerate(val) if (r["iter"], r["nll"]) not in drawn]
    if not fresh:
        return [], None  # everything this run validated is already on another run's line
    if fresh[0] == 0:
        return val, start
    return val[fresh[0] - 1:], None


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, default=here / "logs")
    parser.add_argument("--out", type=Path, default=here / "curves.png")
    args = parser.parse_args()
    runs = sorted((p for p in args.logs.iterdir() if (p / "log.jsonl").is_file()), key=run_order)
    fig, axes = plt.subplots(2, len(METRICS), figsize=(5.2 * len(METRICS), 7), squeeze=False)
    colours = plt.get_cmap("tab20").colors  # the default cycle repeats after 10 runs
    drawn: set[tuple[int, float]] = set()
    for index, run in enumerate(runs):
        val, offset = read_run(run)
        val, start = only_new(val, drawn, offset.get("start"))
        drawn.update((r["iter"], r["nll"]) for r in val)
        it0, h0 = offset.get("iterations", 0), offset.get("cpu_h", 0.0)
        its = ([it0] if start else []) + [it0 + r["iter"] for r in val]
        hours = ([h0] if start else []) + [h0 + r.get("cpu_h", float("nan")) for r in val]
        # The lineage's runs (main_*, the GPU stage) solid, pilots and exploratory runs dashed.
        style = "-" if run.name.startswith(("main_", "gpu_")) else "--"
        for col, (key, label) in enumerate(METRICS):
            values = ([start.get(key, float("nan"))] if start else []) + [r.get(key, float("nan")) for r in val]
            for row, xs in enumerate((its, hours)):
                axes[row][col].plot(xs, values, marker="o", ms=3, label=run.name, linestyle=style,
                                     linewidth=1.6 if style == "-" else 1.0, color=colours[index % len(colours)])
                axes[row][col].set_ylabel(label)
                axes[row][col].set_xlabel("iterations (batch 8 × 96², or the same pixels)" if row == 0 else "CPU-hours")
                axes[row][col].grid(alpha=0.3)
    # One legend for all panels, beside them: inside a panel it covers the curves once there are ~30 runs.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, ncol=2, frameon=False)
    fig.suptitle("llflow training campaign: validation on sice-lowlight/val (22 pairs, τ = 0, EMA weights)")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
