"""The LLFlow network: condition encoder + conditional flow + encoder-conditioned prior."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from ..preprocess import equalize_histogram_tensor, make_condition, pad_to_multiple
from .config import ConfigLike, LLFlowConfig, resolve_config
from .encoder import ConditionEncoder, EncoderOutput, stack_conditions
from .flow import ActNorm2d, ConditionalFlow
from .prior import (bits_per_pixel, dequantize as dequantize_gt, gaussian_log_prob, latent_offset, prior_mean,
                    reference_prior_mean)

if TYPE_CHECKING:  # pragma: no cover
    from .fast import InferenceModel, PreparedCondition
    from .guard import InverseGuard

PriorChoice = Literal["encoder", "gt", "random"]

# Official tensors that never take part in the forward pass (kept for strict loading).
DEAD_PARAMETER_PREFIXES = ("RRDB.downconv3.", "RRDB.HRconv.", "RRDB.conv_last.", "RRDB.awb_para.",
                           "flowUpsamplerNet.f.")


@dataclass
class LikelihoodOutput:
    """Result of mapping a reference image to the latent (training direction).

    ``z``: latent; ``logdet``: log|det ∂z/∂x| per sample (including the dequantisation term when
    used); ``mean``: the prior mean that was used; ``log_prob``: log N(z; mean, I);
    ``nll``: bits per pixel, the official training loss.
    """

    z: Tensor
    logdet: Tensor
    mean: Tensor
    log_prob: Tensor
    nll: Tensor


class LLFlow(nn.Module):
    """LLFlow (Wang et al., AAAI 2022) with the official parameter names.

    Build with plain keyword arguments (``LLFlow(nf=32, nb=4, K=4)``), a config
    (``LLFlow(config)``), :meth:`from_config` (preset name, mapping or YAML) or
    :meth:`from_pretrained` (official ``.pth`` or our ``.safetensors``).
    """

    def __init__(self, config: Optional[LLFlowConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = LLFlowConfig(**kwargs)
        elif kwargs:
            config = config.replace(**kwargs)
        self.config = config
        self.RRDB = ConditionEncoder(config.nf, config.nb, config.gc, config.stack_blocks)
        self.flowUpsamplerNet = ConditionalFlow(
            K=config.K, L=config.L, n_plain=config.n_plain, cond_channels=config.cond_channels,
            hidden_channels=config.hidden_channels, affine_eps=config.affine_eps,
            dead_f_in_channels=config.dead_f_in_channels,
        )

    # ------------------------------------------------------------------ construction and weights
    @classmethod
    def from_config(cls, config: ConfigLike) -> "LLFlow":
        """Randomly initialised network from a preset name, a mapping or a YAML file."""
        return cls(resolve_config(config))

    @classmethod
    def from_pretrained(cls, path: Union[str, Path, None] = None, map_location: Union[str, torch.device] = "cpu") -> "LLFlow":
        """Load an official ``.pth`` or an llflow ``.safetensors`` file; the architecture is read from
        the file (metadata, or detected from the keys and shapes). No argument: the bundled model."""
        from .checkpoint import default_weights_path, read_checkpoint

        resolved = Path(path) if path is not None else default_weights_path()
        state, config = read_checkpoint(resolved)
        model = cls(config)
        model.load_state_dict(state, source=str(resolved))
        return model.to(map_location).eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False,
                        source: str = "state dict") -> Any:
        """Strict loading with official key names; a leading ``module.`` (DataParallel) is stripped.
        Mismatches raise :class:`~llflow.model.checkpoint.CheckpointError` with a one-line message."""
        from .checkpoint import check_state_dict, strip_module_prefix
        from .guard import fallback_guard, split_guard_state

        state, guard = split_guard_state(strip_module_prefix(state_dict))
        if strict:
            check_state_dict(self, state, source)
        result = super().load_state_dict(state, strict=strict, assign=assign)
        self.mark_initialized()
        # Weights without measured ranges (official releases) get the coarse fallback bound.
        self.set_inverse_guard(guard if guard is not None else fallback_guard(self))
        return result

    def set_inverse_guard(self, guard: Optional["InverseGuard"]) -> None:
        """Bound the inverse's intermediate values (:mod:`llflow.model.guard`); None switches it off
        (training does: its weights move away from the ranges measured for the old ones)."""
        for index, layer in enumerate(self.flowUpsamplerNet.layers):
            affine = getattr(layer, "affine", None)
            if affine is not None:
                terms = guard.bounds.get(index, {}) if guard is not None else {}
                affine.set_guard(terms.get("coupling"), terms.get("injector"))
        self.__dict__["_inverse_guard"] = guard

    @property
    def inverse_guard(self) -> Optional["InverseGuard"]:
        return self.__dict__.get("_inverse_guard")

    def save_pretrained(self, path: Union[str, Path], metadata: Optional[Mapping[str, str]] = None) -> Path:
        """Write weights + config as ``.safetensors`` (atomically)."""
        from .checkpoint import save_safetensors

        return save_safetensors(self, Path(path), metadata)

    def mark_initialized(self) -> None:
        """Disable ActNorm data-dependent init (weights came from somewhere else)."""
        for module in self.modules():
            if isinstance(module, ActNorm2d):
                module.initialized = True

    @property
    def device(self) -> torch.device:
        return self.RRDB.conv_first.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.RRDB.conv_first.weight.dtype

    # ------------------------------------------------------------------ building blocks
    def encode(self, lq: Tensor) -> EncoderOutput:
        """Encoder features and learned colour map for a 6-channel condition (H, W divisible by 8)."""
        return self.RRDB(lq)

    def prior_mean(self, enc: EncoderOutput) -> Tensor:
        """Mean of z predicted from the low-light input, ``squeeze8(g(x_l))``."""
        return prior_mean(enc.color_map)

    def _check_multiple(self, x: Tensor, what: str) -> None:
        h, w = x.shape[-2:]
        m = self.config.multiple
        if h % m or w % m:
            raise ValueError(f"{what} is {h}×{w}; this call needs sizes divisible by {m} (crop or pad first; "
                             f"enhance() pads automatically)")

    def _select_mean(self, enc: EncoderOutput, gt: Tensor, prior: PriorChoice,
                     generator: Optional[torch.Generator]) -> Tensor:
        if prior == "random":  # official selector r(a, b): one draw for the whole batch
            draw = torch.rand((), generator=generator, device=generator.device if generator else "cpu")
            prior = "gt" if float(draw) < self.config.train_gt_ratio else "encoder"
        if prior == "gt":
            return reference_prior_mean(gt)
        if prior == "encoder":
            return self.prior_mean(enc)
        raise ValueError(f"prior must be 'encoder', 'gt' or 'random', not {prior!r}")

    def likelihood(self, lq: Tensor, gt: Tensor, prior: PriorChoice = "encoder", dequantize: bool = False,
                   generator: Optional[torch.Generator] = None, noise: Optional[Tensor] = None,
                   quant: int = 32, encoded: Optional[EncoderOutput] = None) -> LikelihoodOutput:
        """Map the reference ``gt`` to the latent given the condition ``lq`` and score it.

        ``dequantize`` adds uniform noise ``(u − ½)/quant`` first (``noise`` = u when given); the
        official training leaves it off. ``encoded``: ``encode(lq)`` when the caller already has it
        (training shares it with an auxiliary loss). Differentiable: this is the training objective.
        """
        self._check_multiple(gt, "the reference image")
        enc = self.encode(lq) if encoded is None else encoded
        logdet = gt.new_zeros(gt.shape[0])
        x = gt
        if dequantize:
            x, logdet = dequantize_gt(gt, quant, generator, noise)
        z, flow_logdet = self.flowUpsamplerNet(x, stack_conditions(enc))
        logdet = logdet + flow_logdet
        mean = self._select_mean(enc, gt, prior, generator)
        log_prob = gaussian_log_prob(z, mean)
        nll = bits_per_pixel(logdet + log_prob, gt.shape[-2], gt.shape[-1])
        return LikelihoodOutput(z, logdet, mean, log_prob, nll)

    def reverse(self, lq: Tensor, z: Optional[Tensor] = None, temperature: float = 0.0,
                eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Decode a latent to an image, ``(x, logdet)``; differentiable (used for L1 training).

        ``z`` defaults to ``μ + τ·ε`` with ``μ`` the encoder prior mean and ``ε`` given or drawn.
        """
        self._check_multiple(lq, "the condition")
        enc = self.encode(lq)
        if z is None:
            z = self.sample_latent(self.prior_mean(enc), temperature, eps, generator)
        return self.flowUpsamplerNet.inverse(z, stack_conditions(enc))

    @staticmethod
    def sample_latent(mean: Tensor, temperature: float = 0.0, eps: Optional[Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> Tensor:
        """``z = μ + τ·ε``; ``τ = 0`` is the official deterministic output."""
        offset = latent_offset(tuple(mean.shape), temperature, eps, generator, mean.dtype, mean.device)
        return mean if offset is None else mean + offset

    # ------------------------------------------------------------------ public entry points
    def _as_input(self, image: Tensor, name: str) -> Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"{name} must be N×3×H×W, got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got {image.dtype}")
        return image.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def enhance(self, low: Tensor, temperature: float = 0.0, eps: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, clamp: bool = True,
                histeq: Optional[Tensor] = None) -> Tensor:
        """Enhance ``low`` (N×3×H×W in [0, 1], any H, W) → N×3×H×W.

        ``temperature`` 0 gives the official deterministic result; ``τ > 0`` samples
        ``z ~ N(μ, τ²I)`` (``eps``: your own standard-normal noise of shape N×192×⌈H/8⌉×⌈W/8⌉, or
        ``generator`` for reproducible draws). Histogram equalisation is computed on the unpadded
        image (``histeq`` may be passed precomputed), then both are padded to a multiple of 8 and
        the output is cropped back. ``clamp=False`` returns the raw flow output.
        """
        x = self._as_input(low, "low")
        h, w = x.shape[-2:]
        if histeq is None:
            histeq = equalize_histogram_tensor(x)
        m = self.config.multiple
        lq = make_condition(pad_to_multiple(x, m), pad_to_multiple(histeq.to(x), m))
        out, _ = self.reverse(lq, temperature=temperature, eps=eps, generator=generator)
        out = out[..., :h, :w]
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(device=low.device, dtype=low.dtype)

    def nll(self, low: Tensor, gt: Tensor, histeq: Optional[Tensor] = None, prior: PriorChoice = "encoder",
            dequantize: bool = False, generator: Optional[torch.Generator] = None) -> Tensor:
        """Negative log-likelihood of ``gt`` given ``low`` per image, in the official normalisation
        (bits per pixel). Sizes must be divisible by 8. ``histeq`` defaults to equalising ``low``."""
        x = self._as_input(low, "low")
        y = self._as_input(gt, "gt")
        if x.shape != y.shape:
            raise ValueError(f"low {tuple(x.shape)} and gt {tuple(y.shape)} differ in shape")
        lq = make_condition(x, histeq.to(x) if histeq is not None else None)
        return self.likelihood(lq, y, prior=prior, dequantize=dequantize, generator=generator).nll

    # ------------------------------------------------------------------ fast inference (opt-in)
    def prepare_for_inference(self, precision: Union[str, torch.dtype] = "fp32",
                              device: Union[str, torch.device, None] = None, **options: Any) -> "InferenceModel":
        """A fast, inference-only copy of this network (:class:`~llflow.model.fast.InferenceModel`):
        folded ActNorms, float64-precomputed 1×1 inverses, fused oneDNN kernels, channels-last and
        optionally bf16 (CPU) / fp16 (GPU). This module is not modified (training is unaffected);
        prepare again after its weights change. Same ``enhance``/``reverse`` contract as here, plus
        ``prepare_condition``/``decode`` for several latents per image."""
        from .fast import InferenceModel

        return InferenceModel(self, precision=precision, device=device, **options)

    def _inference_engine(self, precision: Union[str, torch.dtype]) -> "InferenceModel":
        """Cached :meth:`prepare_for_inference` result, rebuilt when any parameter changes."""
        from .fast import engine_dtype

        dtype = engine_dtype(precision)
        key = (dtype, self.device, id(self.inverse_guard), tuple((p.data_ptr(), p._version) for p in self.parameters()))
        cache = self.__dict__.setdefault("_engine_cache", {})
        engine = cache.get(dtype)
        if engine is None or engine[0] != key:
            engine = (key, self.prepare_for_inference(dtype))
            cache[dtype] = engine
        return engine[1]

    def prepare_condition(self, lq: Tensor, precision: Union[str, torch.dtype, None] = None,
                          with_logdet: bool = False) -> "PreparedCondition":
        """Encoder features, prior mean and every condition-only part of the flow for the N×6×H×W
        condition ``lq`` (H, W multiples of 8), computed once; decode latents with :meth:`decode`.

        ``precision`` defaults to this network's dtype (``fp32``/``fp64``); ``bf16`` on CPUs with
        bf16 units, ``fp16``/``bf16`` on GPUs. Inference only (no gradients)."""
        self._check_multiple(lq, "the condition")
        return self._inference_engine(precision or self.dtype).prepare_condition(lq, with_logdet=with_logdet)

    def decode(self, prepared: "PreparedCondition", z: Optional[Tensor] = None, temperature: float = 0.0,
               eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
               return_logdet: bool = False) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """Decode ``z`` (default ``μ + τ·ε``) with a :meth:`prepare_condition` result → N×3×H×W
        (unclamped, float32/float64). Equals ``reverse(lq, z)[0]`` (fp32: to ~1e-6 relative)."""
        return self._inference_engine(prepared.precision).decode(prepared, z, temperature, eps, generator,
                                                                 return_logdet=return_logdet)

    def num_parameters(self, used_only: bool = True) -> int:
        """Parameter count; ``used_only`` leaves out the official dead tensors."""
        return sum(p.numel() for name, p in self.named_parameters()
                   if not (used_only and name.startswith(DEAD_PARAMETER_PREFIXES)))
