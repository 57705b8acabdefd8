"""The training loop: NLL (the method) or L1 (ablation) objective, exact resume, validation-based
model selection, non-finite-loss guard, mixed precision, and DistributedDataParallel via torchrun.

Reproducibility does not depend on hidden RNG state: the crop/flip of an item comes from
``(seed, epoch, index)`` (see :class:`~llflow.data.PairedDataset`), the sample order of an epoch
from ``(seed, epoch)``, the prior selector's draw from ``(seed, iteration)`` and dequantisation noise
from ``(seed, iteration, rank)``. A resumed run therefore continues exactly, and ``N`` processes
with a global batch ``B`` compute the same update as one process with batch ``B``.

Why one module of ~580 lines (past the ~500-line guideline): the :class:`Trainer`'s state — model,
EMA, optimiser, scaler, RNG-free data order, the resume file and the validation record — is written
and read back in one place (``state.pt``); split across modules, a field added to one half and
forgotten in the other would break exact resume silently. The helpers it needs and others do not
(EMA, the objective, device/precision errors) sit above the class.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from .. import runtime
from ..data import MixedPairs, Pair, PairedDataset, find_pairs, identity_pairs
from ..synthetic import LowLightSynthesizer
from ..model import LLFlow
from ..model.checkpoint import atomic_write
from ..model.config import config_from_mapping
from ..model.encoder import stack_conditions
from ..model.guard import InverseGuard
from ..preprocess import make_condition
from .config import TrainConfig
from .distributed import DistInfo, all_true, barrier, init_distributed, shutdown
from .logger import RunLogger
from .losses import gray_ssim_per_sample, l1_per_sample
from .schedule import learning_rate

STATE_NAME = "state.pt"


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


def _seeded(*parts: int) -> torch.Generator:
    """A generator whose state is a pure function of ``parts``."""
    seed = int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def split_pairs(cfg: TrainConfig) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs. Model selection never looks at a test split: either a
    separate ``data.val`` folder or ``data.holdout`` pairs set aside from the training folder."""
    data = cfg.data
    if data.crop % 8:
        raise TrainingError(f"data.crop {data.crop} must be a multiple of 8 (the flow squeezes three times)")
    train = find_pairs(data.train, split=data.train_split)
    if data.val:
        return train, find_pairs(data.val, split=data.val_split)
    if data.holdout <= 0:
        return train, []
    if data.holdout >= len(train):
        raise TrainingError(f"data.holdout {data.holdout} leaves no training pairs out of {len(train)}")
    order = np.random.default_rng([cfg.optim.seed, 0x7A1]).permutation(len(train))
    held = set(int(i) for i in order[:data.holdout])
    return [p for i, p in enumerate(train) if i not in held], [p for i, p in enumerate(train) if i in held]


class BatchPlan(Sampler):
    """Yields, for iterations ``start..end-1``, this process's share of the global batch as
    ``(epoch, index)`` keys. Epoch ``e``'s order is a permutation drawn from ``(seed, e)``; an epoch
    has ``len(dataset) // batch`` steps (incomplete batches are dropped, as officially)."""

    def __init__(self, n_items: int, global_batch: int, seed: int, start: int, end: int, info: DistInfo) -> None:
        if global_batch % info.world_size:
            raise TrainingError(f"data.batch_size {global_batch} is not divisible by {info.world_size} processes")
        if n_items < global_batch:
            raise TrainingError(f"the training set has {n_items} pairs, fewer than data.batch_size {global_batch}")
        self.n_items, self.batch, self.seed = n_items, global_batch, seed
        self.start, self.end, self.info = start, end, info
        self.steps_per_epoch = n_items // global_batch
        self.local = global_batch // info.world_size

    def global_indices(self, iteration: int) -> tuple[int, list[int]]:
        epoch, offset = divmod(iteration, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n_items)
        return epoch, [int(i) for i in order[offset * self.batch:(offset + 1) * self.batch]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.end):
            epoch, indices = self.global_indices(iteration)
            mine = indices[self.info.rank * self.local:(self.info.rank + 1) * self.local]
            yield [(epoch, i) for i in mine]

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class TrainingObjective(nn.Module):
    """Per-sample loss of one batch; a module so DistributedDataParallel can wrap it."""

    def __init__(self, model: LLFlow, objective: str, dequantize: bool, aux_l1: float = 0.0,
                 aux_ssim: float = 0.0) -> None:
        super().__init__()
        if objective not in ("nll", "l1"):
            raise TrainingError(f"optim.objective must be 'nll' or 'l1', not {objective!r}")
        for name, weight in (("aux_l1", aux_l1), ("aux_ssim", aux_ssim)):
            if weight < 0 or (weight > 0 and objective != "nll"):
                raise TrainingError(f"optim.{name} must be >= 0 and only goes with the nll objective, got {weight}")
        self.model, self.objective, self.dequantize = model, objective, dequantize
        self.aux_l1, self.aux_ssim = aux_l1, aux_ssim

    def forward(self, low: Tensor, gt: Tensor, histeq: Tensor, prior_generator: torch.Generator,
                noise: Optional[Tensor] = None) -> Tensor:
        lq = make_condition(low, histeq)
        if self.objective == "l1":
            out, _ = self.model.reverse(lq)  # z = μ (τ = 0): the deterministic output, as at test time
            return l1_per_sample(out, gt)
        enc = self.model.encode(lq)
        result = self.model.likelihood(lq, gt, prior="random", dequantize=self.dequantize,
                                       generator=prior_generator, noise=noise, encoded=enc)
        loss = result.nll.float()
        if self.aux_l1 > 0 or self.aux_ssim > 0:
            # The deterministic output (z = encoder prior mean, τ = 0), as used at test time.
            out, _ = self.model.flowUpsamplerNet.inverse(self.model.prior_mean(enc), stack_conditions(enc))
            if self.aux_l1 > 0:
                loss = loss + self.aux_l1 * l1_per_sample(out, gt)
            if self.aux_ssim > 0:
                loss = loss + self.aux_ssim * (1 - gray_ssim_per_sample(out, gt))
        return loss


@dataclass
class BestScore:
    metric: str
    value: float = -math.inf
    iteration: int = -1


class WeightAverage:
    """Exponential moving average of a model's weights, kept as a second copy of the model.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so that the average
    is not dominated by the starting weights in short runs. Buffers (ActNorm flags) are copied.
    """

    def __init__(self, model: LLFlow, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise TrainingError(f"optim.ema_decay must be between 0 and 1 (e.g. 0.999), not {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: LLFlow) -> None:
        weight = 1.0 - self.current_decay()
        averaged = list(self.model.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in model.parameters()], weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        self.model.load_state_dict(state["model"], source=source)
        self.updates = int(state["updates"])


def pick_device(name: str) -> torch.device:
    try:
        device = runtime.resolve_device(name)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    if device.type == "mps":  # MPS lacks ops the flow's training needs (float64 slogdet)
        return torch.device("cpu")
    return device


def pick_precision(precision: str, device: torch.device) -> runtime.PrecisionChoice:
    try:
        return runtime.resolve_precision(precision, device)
    except ValueError as exc:
        raise TrainingError(f"optim.precision: {exc}") from None


class Trainer:
    """Owns the model, optimiser, data and run folder of one training run."""

    def __init__(self, cfg: TrainConfig, device: str = "auto", resume: Optional[Path] = None) -> None:
        self.cfg = cfg
        self.info = init_distributed(torch.device("cuda" if device == "cuda" else "cpu"))
        self.device = pick_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            # Training crops have one fixed size: let cuDNN time its kernels once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        self.out = Path(cfg.output)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(self.info)
        self.precision = pick_precision(cfg.optim.precision, self.device)
        torch.manual_seed(cfg.optim.seed)
        random.seed(cfg.optim.seed)
        self.model = LLFlow(config_from_mapping(cfg.model)).to(self.device).train()
        self.objective = TrainingObjective(self.model, cfg.optim.objective, cfg.optim.dequantize,
                                           cfg.optim.aux_l1, cfg.optim.aux_ssim)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                          eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
        use_scaler = self.precision.name == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        train_pairs, val_pairs = split_pairs(cfg)
        self.train_pairs = train_pairs
        synthesizer = LowLightSynthesizer(exposure=tuple(cfg.data.synthetic_exposure),
                                          shot_noise=tuple(cfg.data.synthetic_shot_noise))
        self.train_set = self._training_set(train_pairs, synthesizer)
        self.val_set = PairedDataset(val_pairs, crop=None, flip=False, on_error="skip") if val_pairs else None
        self.iteration = 0
        self.nonfinite = 0
        self.cpu_seconds = 0.0  # process CPU time spent in this run, summed over resumes
        self._cpu_mark = time.process_time()
        self.best = BestScore(cfg.schedule.select_metric)
        self.logger = RunLogger(self.out, cfg.schedule.tensorboard, enabled=self.info.is_main)
        self._stop_requested = False
        resumed_ema = None
        if resume is not None:
            resumed_ema = self._load_state(resume)
        elif cfg.init:
            self._load_init_weights(Path(cfg.init))
        else:
            self._data_dependent_init()
        self.ema: Optional[WeightAverage] = None
        if cfg.optim.ema_decay is not None:
            self.ema = WeightAverage(self.model, cfg.optim.ema_decay)
            if resumed_ema is not None:  # else EMA was switched on for a resumed run: start at its weights
                self.ema.load_state_dict(resumed_ema, source=str(resume))
        # The inference guard's ranges belong to the weights they were measured for: none while
        # training; exports measure fresh ones (_export).
        for model in (self.model, self.ema.model if self.ema is not None else None):
            if model is not None:
                model.set_inverse_guard(None)
        self.wrapped: nn.Module = self.objective
        if self.info.enabled:
            # With the reference colour-map prior the encoder's colour head gets no gradient.
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.optim.objective == "nll")

    # ------------------------------------------------------------------ set-up
    def _training_set(self, pairs: list[Pair], synthesizer: LowLightSynthesizer) -> PairedDataset | MixedPairs:
        data, seed = self.cfg.data, self.cfg.optim.seed
        main = PairedDataset(pairs, crop=data.crop, flip=data.flip, seed=seed, on_error="skip",
                             synthetic_fraction=data.synthetic_fraction, synthesizer=synthesizer)
        if data.extra_fraction <= 0:
            return main
        extra_pairs = [p for folder in data.extra_train for p in find_pairs(folder)]
        if data.identity_pairs:
            extra_pairs += identity_pairs(main.pairs)
        extra = PairedDataset(extra_pairs, crop=data.crop, flip=data.flip, seed=seed + 1, on_error="skip")
        try:
            return MixedPairs(main, extra, data.extra_fraction, seed)
        except ValueError as exc:
            raise TrainingError(f"data.extra_fraction: {exc}") from None

    def _global_batch(self, iteration: int) -> dict[str, Tensor]:
        plan = BatchPlan(len(self.train_set), self.cfg.data.batch_size, self.cfg.optim.seed, 0, 1, DistInfo())
        epoch, indices = plan.global_indices(iteration)
        items = [self.train_set[(epoch, i)] for i in indices]
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in ("low", "gt", "histeq")}

    def _data_dependent_init(self) -> None:
        """Glow-style ActNorm init from the first global batch (identical on every process; plays
        the role of the official code's first iteration, which takes no optimisation step)."""
        batch = self._global_batch(0)
        with torch.no_grad():
            lq = make_condition(batch["low"], batch["histeq"])
            self.model.likelihood(lq, batch["gt"], prior="encoder")
        self.model.mark_initialized()

    def _load_init_weights(self, path: Path) -> None:
        """Fine-tuning: weights from a checkpoint of the same architecture (ActNorms included, so
        no data-dependent initialisation)."""
        from ..model.checkpoint import CheckpointError, read_checkpoint

        state, config = read_checkpoint(path)
        if config != self.model.config:
            raise CheckpointError(f"{path}: the init weights are another architecture than the config's model "
                                  f"section builds; set model to the weights' preset (see llflow info {path})")
        self.model.load_state_dict(state, source=str(path))

    def loader(self) -> DataLoader:
        """The training batches from the current iteration to ``optim.iterations`` (resumes exactly)."""
        plan = BatchPlan(len(self.train_set), self.cfg.data.batch_size, self.cfg.optim.seed,
                         self.iteration, self.cfg.optim.iterations, self.info)
        if self.cfg.data.num_workers > 0:
            self.train_set.preload()  # forked workers share the decoded images
        return DataLoader(self.train_set, batch_sampler=plan, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "nonfinite": self.nonfinite,
            "cpu_seconds": self.cpu_time(),
            "best": {"metric": self.best.metric, "value": self.best.value, "iteration": self.best.iteration},
            "config": self.cfg.to_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def save_state(self) -> None:
        if not self.info.is_main:
            return
        state = self.state_dict()
        atomic_write(self.out / STATE_NAME, lambda tmp: torch.save(state, tmp))

    def _load_state(self, path: Path) -> Optional[dict[str, Any]]:
        """Restore everything but the weight average; returns the saved average (None if none)."""
        path = path / STATE_NAME if path.is_dir() else path
        if not path.is_file():
            raise TrainingError(f"{path}: no training state to resume from (expected {STATE_NAME} in the run folder)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.nonfinite = int(state["nonfinite"])
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self._cpu_mark = time.process_time()
        self.best = BestScore(**state["best"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_tuple(state["rng"]["python"]))
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.info.is_main:
            print(f"resumed from {path} at iteration {self.iteration}", flush=True)
        return state.get("ema")

    # ------------------------------------------------------------------ loop
    def cpu_time(self) -> float:
        """CPU seconds this run has used so far (all threads of this process, over every resume):
        the fair axis for comparing recipes on machines of other speeds and thread counts."""
        return self.cpu_seconds + time.process_time() - self._cpu_mark

    def _cpu_budget_spent(self) -> bool:
        budget = self.cfg.schedule.stop_after_cpu_h
        spent = budget is not None and self.cpu_time() >= budget * 3600
        return all_true(spent, self.info, self.device)  # every rank stops at the same iteration

    def _autocast(self) -> contextlib.AbstractContextManager:
        return runtime.autocast(self.device, self.precision)

    def _set_lr(self) -> float:
        o = self.cfg.optim
        lr = learning_rate(self.iteration, o.lr, o.iterations, o.warmup, o.milestones, o.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self, batch: dict[str, Any]) -> Optional[float]:
        """One optimisation step; returns the loss, or None when the step was skipped."""
        low, gt, histeq = (batch[k].to(self.device, non_blocking=True) for k in ("low", "gt", "histeq"))
        seed = self.cfg.optim.seed
        prior_gen = _seeded(seed, self.iteration, 1)
        noise = None
        if self.cfg.optim.dequantize:
            noise = torch.rand(gt.shape, generator=_seeded(seed, self.iteration, 2, self.info.rank)).to(gt)
        with self._autocast():
            losses = self.wrapped(low, gt, histeq, prior_gen, noise)
        loss = losses.mean()
        if not all_true(bool(torch.isfinite(loss)), self.info, self.device):
            return self._skip("loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.objective.parameters(), clip)
        if not torch.isfinite(grad_norm) and not self.scaler.is_enabled():
            return self._skip("gradient")
        self.scaler.step(self.optimizer)  # with fp16 the scaler itself skips inf/NaN gradients
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.nonfinite = 0
        return float(loss.detach())

    def _skip(self, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite += 1
        if self.info.is_main:
            print(f"[train {self.iteration}] non-finite {what}: step skipped ({self.nonfinite} in a row)", flush=True)
        if self.nonfinite >= self.cfg.optim.max_nonfinite:
            self.save_state()
            raise TrainingError(
                f"{self.nonfinite} consecutive non-finite {what}es at iteration {self.iteration}: stopping; "
                f"lower optim.lr, set optim.grad_clip, or use optim.precision fp32, then --resume")
        return None

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def train(self) -> BestScore:
        """Run to ``optim.iterations``; returns the best validation score."""
        total = self.cfg.optim.iterations
        if self.info.is_main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            print(f"training {self.model.num_parameters():,} parameters on {self.device} "
                  f"({self.info.world_size} process(es)), {self.cfg.optim.objective} objective, "
                  f"iterations {self.iteration}..{total}", flush=True)
            print(f"runtime: {runtime.describe(self.device, self.precision)}", flush=True)
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.iteration == 0 and self.val_set is not None and self.cfg.schedule.val_at_start:
                self.validate()
            tic = time.time()
            losses: list[float] = []
            started = self.iteration
            for batch in self.loader():
                lr = self._set_lr()
                loss = self.step(batch)
                self.iteration += 1
                if loss is not None:
                    losses.append(loss)
                sched = self.cfg.schedule
                first = self.iteration - started == min(5, sched.log_every)
                if first and self.info.is_main:  # the speed decides whether a run is worth waiting for
                    print(f"[train {self.iteration}] {len(losses) / max(time.time() - tic, 1e-9):.3f} it/s "
                          f"over the first {len(losses)} iterations", flush=True)
                if self.iteration % sched.log_every == 0 or self.iteration == total:
                    rate = len(losses) / max(time.time() - tic, 1e-9)
                    if losses:
                        self.logger.log("train", self.iteration, {"loss": float(np.mean(losses)), "lr": lr,
                                                                  "it_per_s": round(rate, 3),
                                                                  "cpu_h": round(self.cpu_time() / 3600, 4)})
                    tic = time.time()
                    losses = []
                out_of_budget = self._cpu_budget_spent()
                if self.val_set is not None and (self.iteration % sched.val_every == 0 or self.iteration == total
                                                 or out_of_budget):
                    self.validate()
                    # A scheduled validation can spend the rest of the budget: stop on its scores
                    # rather than validate again one iteration later.
                    out_of_budget = out_of_budget or self._cpu_budget_spent()
                if (self.iteration % sched.ckpt_every == 0 or self.iteration == total or self._stop_requested
                        or out_of_budget):
                    self.save_state()
                if out_of_budget and self.info.is_main:
                    print(f"CPU budget of {sched.stop_after_cpu_h} h spent at iteration {self.iteration}; "
                          f"resume with --resume {self.out} --set schedule.stop_after_cpu_h=<more>", flush=True)
                if self._stop_requested or out_of_budget:
                    if self.info.is_main and self._stop_requested:
                        print(f"stopped at iteration {self.iteration}; resume with --resume {self.out}", flush=True)
                    break
            self._check_ranks_in_sync()
            if self.iteration >= total:
                self._export("final")
                if self.val_set is None:
                    self._export("best")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.logger.close()
            barrier(self.info)
        return self.best

    def _check_ranks_in_sync(self) -> None:
        """DistributedDataParallel keeps replicas identical; verify it instead of assuming it."""
        if not self.info.enabled:
            return
        import torch.distributed as dist

        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(self.info.world_size)]
        dist.all_gather(gathered, checksum.to(self.device))
        values = [float(g) for g in gathered]
        if max(values) != min(values):
            raise TrainingError(f"distributed replicas diverged at iteration {self.iteration}: checksums {values}")
        if self.info.is_main:
            print(f"ranks in sync at iteration {self.iteration}: parameter checksum {values[0]:.10e} "
                  f"on all {self.info.world_size} processes", flush=True)

    # ------------------------------------------------------------------ validation and export
    @property
    def selected_model(self) -> LLFlow:
        """The weights that are validated and exported: the moving average when EMA is on."""
        return self.ema.model if self.ema is not None else self.model

    @torch.no_grad()
    def validation_metrics(self) -> dict[str, float]:
        """Means over ``val`` of :attr:`selected_model` at τ = 0, scored as ``llflow evaluate`` does
        (:func:`~llflow.metrics.evaluate_pair`: PSNR, SSIM grey, SSIM-RGB, LPIPS-alex when its weights
        are installed — a yardstick, never a loss —, each raw and ``_gtmean``), and the NLL with the
        encoder prior."""
        from ..metrics import evaluate_pair, float_to_uint8, lpips_weights_available

        assert self.val_set is not None
        model = self.selected_model
        was_training = model.training
        model.eval()
        with_lpips = lpips_weights_available()
        scores: dict[str, list[float]] = {}
        count = len(self.val_set) if self.cfg.data.val_max_images is None else min(len(self.val_set), self.cfg.data.val_max_images)
        for index in range(count):
            item = self.val_set[index]
            low, gt, histeq = (item[k][None].to(self.device) for k in ("low", "gt", "histeq"))
            out = model.enhance(low, histeq=histeq, clamp=False)
            gt_u8 = float_to_uint8(gt[0].permute(1, 2, 0).cpu().numpy())
            image_scores = evaluate_pair(out[0].permute(1, 2, 0).float().cpu().numpy(), gt_u8, with_lpips=with_lpips)
            h, w = (s - s % 8 for s in gt.shape[-2:])
            image_scores["nll"] = float(model.nll(low[..., :h, :w], gt[..., :h, :w], histeq=histeq[..., :h, :w]).mean())
            for key, value in image_scores.items():
                scores.setdefault(key, []).append(value)
        model.train(was_training)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    def validate(self) -> None:
        if self.info.is_main:
            metrics = self.validation_metrics()
            self.logger.log("val", self.iteration, {**metrics, "cpu_h": round(self.cpu_time() / 3600, 4)})
            value = metrics[self.best.metric] * (-1 if self.best.metric == "nll" else 1)
            if value > self.best.value and self.iteration > 0:
                self.best = BestScore(self.best.metric, value, self.iteration)
                self._export("best", metrics)
        barrier(self.info)

    def _export(self, name: str, metrics: Optional[dict[str, float]] = None) -> None:
        if not self.info.is_main:
            return
        meta = {"iteration": str(self.iteration), "objective": self.cfg.optim.objective}
        meta.update({f"val_{k}": f"{v:.6f}" for k, v in (metrics or {}).items()})
        if self.ema is not None:
            meta["ema_decay"] = str(self.ema.decay)
        model = self.selected_model
        guard, pairs = self._measure_guard(model)
        if guard is not None:
            meta["inverse_guard"] = f"measured on {pairs} training pairs at iteration {self.iteration}"
        model.set_inverse_guard(guard)
        try:
            model.save_pretrained(self.out / f"{name}.safetensors", metadata=meta)
        finally:
            model.set_inverse_guard(None)

    def _measure_guard(self, model: LLFlow) -> tuple[Optional[InverseGuard], int]:
        """Ranges of the inverse's intermediate values on up to ``data.guard_pairs`` whole training
        pairs, and how many pairs they were measured on (fewer where the set is smaller or a pair
        does not read)."""
        from ..model.guard import measure_guard

        count = min(self.cfg.data.guard_pairs, len(self.train_pairs))
        if count <= 0:
            return None, 0
        data = PairedDataset([self.train_pairs[round(i * len(self.train_pairs) / count)] for i in range(count)],
                             crop=None, flip=False, on_error="skip")
        pairs = []
        for item in data:
            h, w = (s - s % 8 for s in item["gt"].shape[-2:])
            pairs.append((item["low"][None, :, :h, :w].to(self.device), item["gt"][None, :, :h, :w].to(self.device)))
        was_training = model.training
        model.eval()
        try:
            return (measure_guard(model, pairs) if pairs else None), len(pairs)
        finally:
            model.train(was_training)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples; a checkpoint round trip may give lists."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def run_training(cfg: TrainConfig, device: str = "auto", resume: Optional[Path] = None) -> BestScore:
    trainer = Trainer(cfg, device=device, resume=resume)
    try:
        return trainer.train()
    finally:
        shutdown(trainer.info)
