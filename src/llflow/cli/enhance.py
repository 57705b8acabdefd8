"""The ``llflow enhance`` and ``llflow info`` subcommands.

``llflow enhance INPUT... [-o OUTDIR]`` — what it writes
    For each input image ``{stem}.{ext}``, in ``OUTDIR`` (default ``results``; created with its
    parents when missing):

    * ``{stem}{suffix}.{ext}`` — the enhanced image (suffix default ``_llflow``). With
      ``--samples N`` (N > 1) instead N files ``{stem}{suffix}_s{i}.{ext}``, i = 0..N-1.
    * ``{stem}{suffix}_uncertainty.png`` with ``--uncertainty`` — a 16-bit grey PNG of the per-pixel
      standard deviation over samples (see :data:`llflow.inference.UNCERTAINTY_FULL_SCALE` for the scale).

    Files found inside a folder given with ``--recursive`` keep their sub-folder path below
    ``OUTDIR``. ``--ext auto`` keeps the input's format; 16-bit PNG/TIFF inputs give 16-bit
    outputs (PNG/TIFF only), grey inputs give grey outputs, alpha is copied unchanged (JPEG has none).

    Safety: an output that would replace one of the inputs, or that two inputs would both write,
    is an error for that input. Existing outputs are kept (the input counts as *skipped*) unless
    ``--overwrite``. Outputs are written atomically: an interrupted run leaves no partial file.

    Errors: an input that cannot be read gets one line on stderr naming it; the others are still
    processed; the exit status is 1 if any input failed. A summary line ends the run.

    The flow's own options (details in :mod:`llflow.inference`):

    * ``--temperature τ``: 0 (default) is the official deterministic output ``z = μ``; τ > 0
      decodes ``z = μ + τ·ε``. ``--samples N --seed S`` writes N such samples (τ default 0.8);
      sample i of an image depends only on (S, i), not on the other images or the process.
    * ``--uncertainty``: std over N samples (``--samples N``, else ``--uncertainty-samples``,
      default 8) at τ (default 0.8) of each output value, averaged over R, G, B; stored as a 16-bit
      grey PNG, value v ↔ std = v / 65535 × 0.25 (white = 0.25 or more, in [0, 1] intensity units).
    * ``--exposure EV``: EV stops more (or, negative, less) linear light than the official output,
      by moving the latent along the model's colour-neutral brightness direction; saturates
      (with a note) where highlights clip. 0 gives exactly the official output.
    * ``--tile SIZE --tile-pad P``: bounded memory; without ``--tile`` images that would not fit
      in half the free memory (or ``--memory-budget`` / ``$LLFLOW_MEMORY_BUDGET``) are tiled
      automatically; ``--tile 0`` never tiles.

    Many processes: ``torchrun --nproc-per-node N -m llflow enhance ...`` (or several nodes) splits
    the sorted input list: rank ``r`` of ``W`` takes items ``r, r+W, ...``; results are identical to
    one process (noise comes from ``--seed`` per image, not from a shared stream).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..inference import SAMPLE_TEMPERATURE, UNCERTAINTY_FULL_SCALE, UNCERTAINTY_SAMPLES, Enhancer
from ..io import IMAGE_EXTENSIONS, ImageReadError, ImageWriteError, list_images, read_image, write_image
from ..preprocess import to_float32
from ..request import Request, run_request
from .options import add_model_options, add_tile_options, check_tile_args, load_enhancer

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
_EXT_CHOICES = ("auto", "png", "jpg", "tif")
_SUMMARY_PREFIX = "llflow enhance:"


# ================================================================================================
# Parser


def add_enhance(sub: argparse._SubParsersAction) -> None:
    """Register ``llflow enhance``."""
    p = sub.add_parser(
        "enhance", help="enhance low-light images (files, folders, globs)",
        description="Enhance low-light images with LLFlow. Writes OUTDIR/{stem}{suffix}.{ext}; existing outputs "
                    "are kept unless --overwrite. Many processes: torchrun --nproc-per-node N -m llflow enhance ...")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--examples", action="store_true", help="enhance the example images bundled with llflow")
    p.add_argument("-o", "--output", type=Path, default=Path("results"),
                   help="output folder, created if missing (default: results)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also take images in sub-folders of folder inputs (kept as sub-folders of OUTDIR)")
    p.add_argument("--suffix", default="_llflow", help="appended to the input's stem (default: _llflow; '' allowed, use --suffix=-x for leading dashes)")
    p.add_argument("--ext", default="auto", choices=_EXT_CHOICES, help="output format (default: auto = the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default: 95)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep and skip)")
    add_model_options(p)
    p.add_argument("--temperature", "-t", type=float, default=None,
                   help=f"latent temperature τ: 0 = the official deterministic result (default for one output), "
                        f">0 samples z=μ+τε (default {SAMPLE_TEMPERATURE} for --samples/--uncertainty)")
    p.add_argument("--samples", "-n", type=int, default=1,
                   help="write N different plausible enhancements {stem}{suffix}_s{i}.{ext}")
    p.add_argument("--seed", type=int, default=0, help="noise seed, per image, for τ > 0 (default: 0)")
    p.add_argument("--uncertainty", action="store_true",
                   help=f"also write {{stem}}{{suffix}}_uncertainty.png: per-pixel std over samples (RGB mean), "
                        f"16-bit grey, white = std {UNCERTAINTY_FULL_SCALE}")
    p.add_argument("--uncertainty-samples", type=int, default=UNCERTAINTY_SAMPLES,
                   help="samples for --uncertainty when --samples is not given (default: %(default)s)")
    p.add_argument("--exposure", "-e", type=float, default=0.0,
                   help="exposure in EV stops from the latent (+1 brighter, -1 darker; 0 = official output)")
    add_tile_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_enhance)


def add_info(sub: argparse._SubParsersAction) -> None:
    """Register ``llflow info``."""
    p = sub.add_parser("info", help="show the model, device and precision that enhance would use, and why")
    add_model_options(p)
    p.set_defaults(func=run_info)


# ================================================================================================
# Planning: which inputs, which outputs


@dataclass
class Job:
    """One input and the files it produces (``outputs``: kind → path; kinds ``main``, ``s{i}``,
    ``uncertainty``), or a planning ``error`` that makes it fail without being read."""

    source: Path
    outputs: Dict[str, Path] = field(default_factory=dict)
    error: Optional[str] = None


def _output_ext(source: Path, ext: str) -> str:
    """``.png``/``.jpg``/``.tif``, or the input's own extension for ``auto`` (PNG when it has none
    that we can write, e.g. a PNG file named ``photo.dat``)."""
    if ext != "auto":
        return "." + ext
    suffix = source.suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".png"


def expand_inputs(inputs: Sequence[str], recursive: bool, errors: List[str]) -> List[Tuple[Path, Path]]:
    """(file, sub-folder below OUTDIR) for every input, sorted and without duplicates.

    Files inside a folder input keep their path relative to that folder (only deeper than one
    level with ``--recursive``), so same-named files in different sub-folders do not collide.
    """
    seen: Dict[str, Tuple[Path, Path]] = {}
    for item in inputs:
        folder = Path(item) if Path(item).is_dir() else None
        for path in list_images([item], recursive=recursive, errors=errors):
            relative = path.parent.relative_to(folder) if folder is not None else Path()
            seen.setdefault(os.path.realpath(path), (path, relative))
    return sorted(seen.values(), key=lambda pair: (str(pair[0].parent), pair[0].name))


def plan_jobs(files: Sequence[Tuple[Path, Path]], outdir: Path, suffix: str, ext: str, samples: int,
              with_uncertainty: bool) -> List[Job]:
    """Output paths for every input; marks inputs whose outputs would replace an input or another
    input's output (the later input in sorted order fails, deterministically on every rank)."""
    inputs = {os.path.realpath(path) for path, _ in files}
    claimed: Dict[str, Path] = {}
    jobs = []
    for path, relative in files:
        folder = outdir / relative
        stem = path.stem + suffix
        out_ext = _output_ext(path, ext)
        outputs: Dict[str, Path] = {}
        if samples > 1:
            outputs.update({f"s{i}": folder / f"{stem}_s{i}{out_ext}" for i in range(samples)})
        else:
            outputs["main"] = folder / f"{stem}{out_ext}"
        if with_uncertainty:
            outputs["uncertainty"] = folder / f"{stem}_uncertainty.png"
        job = Job(path, outputs)
        for out in outputs.values():
            real = os.path.realpath(out)
            if real in inputs:
                job.error = (f"{path}: output '{out}' would overwrite an input; choose another -o folder "
                             f"or a non-empty --suffix")
            elif real in claimed:
                job.error = (f"{path}: output '{out}' is also the output of '{claimed[real]}'; use --ext auto "
                             f"or enhance them separately")
            if job.error:
                break
        if job.error is None:
            claimed.update({os.path.realpath(out): path for out in outputs.values()})
        jobs.append(job)
    return jobs


# ================================================================================================
# Running


def _distributed_rank() -> Tuple[int, int]:
    """(rank, world size) from the environment torchrun sets; (0, 1) otherwise."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world


def _progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _make_bar(enabled: bool):  # -> Callable[[int, str], tqdm]
    """Factory for tile progress bars (nested below the files bar, removed when done)."""
    from tqdm import tqdm

    def factory(total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, position=1,
                    disable=not enabled or total <= 1, dynamic_ncols=True)

    return factory


def _to_hwc(out: torch.Tensor) -> np.ndarray:
    """1×3×H×W float tensor → H×W×3 float32 numpy in [0, 1]."""
    return out[0].detach().clamp(0, 1).permute(1, 2, 0).contiguous().numpy()


def request_for(args: argparse.Namespace, todo: Dict[str, Path]) -> Request:
    """The :class:`~llflow.request.Request` of one input: what is still to write, with the options."""
    return Request(temperature=args.temperature, samples=args.samples, exposure=args.exposure, seed=args.seed,
                   main=args.samples == 1 and "main" in todo, uncertainty="uncertainty" in todo,
                   uncertainty_samples=args.uncertainty_samples, tile=args.tile, tile_pad=args.tile_pad)


def process_job(job: Job, enhancer: Enhancer, args: argparse.Namespace, bar_factory: Any) -> str:
    """Enhance one input and write its outputs; returns ``"done"`` or ``"skipped"``. Notes (exposure
    saturated, raw output out of range) go to stderr, one line each, naming the input.

    Raises ImageReadError/ImageWriteError/ValueError/RuntimeError with a one-line message.
    """
    todo = {kind: path for kind, path in job.outputs.items() if args.overwrite or not path.exists()}
    if not todo:
        return "skipped"
    image = read_image(job.source)
    # Straight to float: a 16-bit input is never quantised to 8 bits (only hist-eq is, by design).
    low = torch.from_numpy(to_float32(image.rgb)).permute(2, 0, 1)[None]
    for path in todo.values():  # sub-folders mirrored from a --recursive folder input
        path.parent.mkdir(parents=True, exist_ok=True)
    outcome = run_request(enhancer, low, request_for(args, todo), stage=lambda _name: bar_factory)
    from tqdm import tqdm

    if outcome.exposure_note:
        tqdm.write(f"note: {job.source}: {outcome.exposure_note}", file=sys.stderr)
    if outcome.out_of_range_note:
        tqdm.write(f"warning: {job.source}: {outcome.out_of_range_note}", file=sys.stderr)
    if "uncertainty" in todo:
        write_image(todo["uncertainty"], outcome.uncertainty16, bit_depth=16)
    results = {f"s{i}": s for i, s in enumerate(outcome.samples)}
    if outcome.main is not None:
        results["main"] = outcome.main
    for kind, path in todo.items():
        if kind == "uncertainty":
            continue
        write_image(path, _to_hwc(results[kind]), alpha=image.alpha, gray=image.was_gray,
                    bit_depth=image.bit_depth, quality=args.quality)
    return "done"


def _check_args(args: argparse.Namespace) -> None:
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.samples > 1 and args.temperature == 0:
        raise ValueError("--samples > 1 at --temperature 0 would write identical images; use τ > 0 (e.g. 0.8)")
    if args.uncertainty and args.temperature == 0:
        raise ValueError("--uncertainty at --temperature 0 is zero everywhere; use τ > 0 (default 0.8)")
    if args.uncertainty and args.samples == 1 and args.uncertainty_samples < 2:
        raise ValueError("--uncertainty-samples must be >= 2")
    if args.temperature is not None and args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    check_tile_args(args)
    if not 1 <= args.quality <= 100:
        raise ValueError(f"--quality must be 1..100, got {args.quality}")
    if not args.inputs and not args.examples:
        raise ValueError("give INPUT files/folders/globs, or --examples for the bundled example images")


def _all_reduce_counts(counts: List[int], world: int) -> Optional[List[int]]:
    """Sum counts over torchrun processes (gloo); None when no process group can be formed."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    tensor = torch.tensor(counts, dtype=torch.int64)
    dist.all_reduce(tensor)
    total = [int(v) for v in tensor]
    dist.destroy_process_group()
    return total


def run_enhance(args: argparse.Namespace) -> int:
    """``llflow enhance``: returns the exit status (1 if any input failed)."""
    _check_args(args)
    start = time.perf_counter()
    rank, world = _distributed_rank()
    enhancer = load_enhancer(args)
    if enhancer.engine == "onnxruntime":  # export (once per weights, cached) or fail before any image
        enhancer.prepare_engine()

    errors: List[str] = []
    inputs = list(args.inputs) + ([str(EXAMPLES_DIR)] if args.examples else [])
    files = expand_inputs(inputs, args.recursive, errors)
    outdir: Path = args.output
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder '{outdir}': {exc.strerror or exc}") from None
    jobs = plan_jobs(files, outdir, args.suffix, args.ext, args.samples, args.uncertainty)
    mine = jobs[rank::world]
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    failed_lines = errors if rank == 0 else []  # listing errors are the same on every rank: report once

    from tqdm import tqdm

    enabled = _progress_enabled(args.quiet)
    counts = {"done": 0, "skipped": 0, "failed": len(failed_lines)}
    for line in failed_lines:
        print(f"{prefix}error: {line}", file=sys.stderr)
    bar_factory = _make_bar(enabled)
    with tqdm(mine, desc=f"{prefix}enhance", unit="img", file=sys.stderr, disable=not enabled,
              dynamic_ncols=True) as bar:
        for job in bar:
            try:
                if job.error:
                    raise ValueError(job.error)
                counts[process_job(job, enhancer, args, bar_factory)] += 1
            except (ImageReadError, ImageWriteError, ValueError, RuntimeError, OSError, MemoryError) as exc:
                counts["failed"] += 1
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if job.source.as_posix() not in message and str(job.source) not in message:
                    message = f"{job.source}: {message}"
                tqdm.write(f"{prefix}error: {message}", file=sys.stderr)
            if enabled:
                bar.set_postfix(done=counts["done"], skipped=counts["skipped"], failed=counts["failed"])
    elapsed = time.perf_counter() - start
    values = [counts["done"], counts["skipped"], counts["failed"]]
    print(f"{_SUMMARY_PREFIX} {prefix}{values[0]} done, {values[1]} skipped (output exists; --overwrite to redo), "
          f"{values[2]} failed in {elapsed:.1f} s -> {outdir}", file=sys.stderr)
    total = _all_reduce_counts(values, world)
    if total is not None:
        if rank == 0:
            print(f"{_SUMMARY_PREFIX} all {world} processes: {total[0]} done, {total[1]} skipped, "
                  f"{total[2]} failed", file=sys.stderr)
        values = total
    return 1 if values[2] else 0


# ================================================================================================
# info


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(enhancer: Enhancer, default: bool = False) -> List[str]:
    """Human-readable lines about a loaded model (used by ``llflow info``)."""
    from .. import __version__
    from ..inference import memory_budget

    cfg = enhancer.config
    n = torch.get_num_threads()
    threads = f", {n} thread{'s' if n != 1 else ''}" if enhancer.device.type == "cpu" else ""
    name = torch.cuda.get_device_name(enhancer.device) if enhancer.device.type == "cuda" else ""
    budget = memory_budget(enhancer.device, enhancer.memory_budget)
    return [
        f"llflow {__version__} (torch {torch.__version__})",
        f"model: {'default (bundled): ' if default else ''}{enhancer.source}",
        f"architecture: {enhancer.architecture} (nf={cfg.nf}, nb={cfg.nb}, K={cfg.K}, L={cfg.L}, "
        f"stacked blocks {list(cfg.stack_blocks)})",
        f"parameters: {enhancer.net.num_parameters():,} used ({enhancer.net.num_parameters(False):,} stored)",
        f"device: {enhancer.device}{(' ' + name) if name else ''}{threads}",
        f"precision: {enhancer.precision}, engine: {enhancer.engine_name}",
        f"runtime: {enhancer.describe_runtime()}",
        f"memory: ~{enhancer.bytes_per_pixel():.0f} B/pixel; budget {_format_bytes(budget)} -> images up to "
        f"{enhancer.max_untiled_pixels() / 1e6:.1f} MP in one piece, larger ones are tiled",
    ]


def run_info(args: argparse.Namespace) -> int:
    """``llflow info``: the model/device/precision ``enhance`` would use with these options."""
    enhancer = load_enhancer(args)
    for line in describe(enhancer, default=args.model in (None, "default")):
        print(line)
    return 0
