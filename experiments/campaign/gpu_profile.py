"""Where a training step's time goes on a lent GPU (or on the CPU, for a dry run), for the next lease's
plan: session 11's H200 ran the campaign recipe at batch 16 x 160² at only 4.5 it/s.

For each batch size: time ``--steps`` steps of the campaign recipe after a warm-up, split into the
wait for the data loader and the step itself (device synchronised), and report pixels per second.
Then one ``torch.profiler`` pass over a few steps at the first batch size: the operators with the
most self device time and self CPU time, and kernel launches per step. A step whose CPU time is
close to its wall time, with thousands of small kernels, is launch-bound (a larger batch then costs
little extra time per step); one dominated by device time is compute-bound.

    python experiments/campaign/gpu_profile.py OUT_DIR [--device cuda] [--precision bf16] [--crop 160]
        [--batches 16 32 64] [--steps 20] [--data gpu_data/sice-lowlight] [--workers 6]

Writes OUT_DIR/profile.json and OUT_DIR/profile_ops.txt; prints a table. Nothing is trained for keeps:
the weights are thrown away.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llflow.training import load_config
from llflow.training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sice_smallnet_campaign.yaml"


def make_trainer(args: argparse.Namespace, batch: int, out: Path) -> Trainer:
    overrides = [f"data.train={args.data}/train", f"data.extra_train=[{args.data}/train-mild]", "data.val=null",
                 f"data.crop={args.crop}", f"data.batch_size={batch}", f"data.num_workers={args.workers}",
                 f"optim.precision={args.precision}", "optim.iterations=1000000", f"output={out}"]
    return Trainer(load_config(CONFIG, overrides), device=args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, batches, warmup: int, steps: int) -> dict[str, float]:
    data_s, step_s, cpu_s = [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1, c1 = time.perf_counter(), time.process_time()
        trainer.step(batch)
        trainer.iteration += 1
        synchronize(trainer.device)
        t2, c2 = time.perf_counter(), time.process_time()
        if i >= warmup:
            data_s.append(t1 - t0)
            step_s.append(t2 - t1)
            cpu_s.append(c2 - c1)
    return {"data_s": statistics.median(data_s), "step_s": statistics.median(step_s),
            "step_cpu_s": statistics.median(cpu_s)}


def profile_steps(trainer: Trainer, batches, steps: int) -> tuple[str, dict[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.step(next(batches))
            trainer.iteration += 1
        synchronize(trainer.device)
    averages = prof.key_averages()
    launches = sum(e.count for e in averages if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC"))
    device_key = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    tables = (f"top operators by {device_key} over {steps} steps\n"
              + averages.table(sort_by=device_key, row_limit=20)
              + f"\ntop operators by self_cpu_time_total over {steps} steps\n"
              + averages.table(sort_by="self_cpu_time_total", row_limit=20))
    return tables, {"kernel_launches_per_step": launches / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--data", default="gpu_data/sice-lowlight")
    parser.add_argument("--workers", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
            "precision": args.precision, "crop": args.crop, "steps": args.steps, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n, batch in enumerate(args.batches):
            trainer = make_trainer(args, batch, Path(tmp) / f"b{batch}")
            batches = iter(trainer.loader())
            row = {"batch": batch, **time_steps(trainer, batches, args.warmup, args.steps)}
            row["it_per_s"] = 1.0 / (row["data_s"] + row["step_s"])
            row["megapixels_per_s"] = row["it_per_s"] * batch * args.crop ** 2 / 1e6
            if n == 0:
                tables, extra = profile_steps(trainer, batches, args.profile_steps)
                row.update(extra)
                (args.out / "profile_ops.txt").write_text(tables)
            info["rows"].append(row)
            # Written after every row: the lease runs this under a time limit.
            (args.out / "profile.json").write_text(json.dumps(info, indent=1))
            print(f"batch {batch:3d}: data {row['data_s'] * 1e3:7.1f} ms  step {row['step_s'] * 1e3:7.1f} ms "
                  f"(CPU {row['step_cpu_s'] * 1e3:7.1f} ms)  {row['it_per_s']:6.2f} it/s  "
                  f"{row['megapixels_per_s']:6.2f} Mpx/s", flush=True)
            del trainer, batches
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
