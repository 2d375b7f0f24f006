"""The plan: every part of a training step's memory, predicted from a config.

See the package docstring (`course_utils.memory`) for the parts and how to read a plan.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import torch

from ..hardware import GIB, HardwareProfile
from .configs import load_config
from .layout import (ActivationEstimate, ModelLayout, _bytes_per, _dtype, estimate_activations,
                     model_layout, optimizer_state_bytes, quantized_linear_bytes, resolve_targets)
from .verdicts import Verdict, verdict

METHODS = ("full", "lora", "qlora")
QUANTIZATIONS = (None, "int8", "fp4", "nf4")
# Names as in transformers' TrainingArguments(optim=...), plus short aliases.
OPTIMIZERS = ("adamw_torch", "paged_adamw_32bit", "adamw_8bit", "paged_adamw_8bit", "sgd")
OPTIMIZER_ALIASES = {"adamw": "adamw_torch", "adam": "adamw_torch", "adamw_bnb_8bit": "adamw_8bit"}

# The CUDA context, cuBLAS/cuDNN handles and loaded kernels: allocated outside
# PyTorch's caching allocator, so `torch.cuda.max_memory_reserved()` does not
# show it but `nvidia-smi` does. Typically 0.5-1 GiB; we assume the middle.
CUDA_CONTEXT_BYTES = int(0.75 * GIB)


@dataclass(frozen=True)
class PlanSettings:
    """Everything `plan_memory` was asked, after defaults were filled in."""

    method: str
    rank: int
    targets: tuple[str, ...]
    batch: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    quantization: str | None
    double_quant: bool
    compute_dtype: torch.dtype
    weight_dtype: torch.dtype  # unquantized linear weights
    unquantized_dtype: torch.dtype  # embeddings, lm_head, norms, biases
    device: str

    def describe(self) -> str:
        dtype = str(self.compute_dtype).removeprefix("torch.")
        quant = self.quantization or str(self.weight_dtype).removeprefix("torch.")
        if self.quantization and self.double_quant:
            quant += "+DQ"
        parts = [self.method, f"base {quant}", f"compute {dtype}"]
        if self.method != "full":
            parts.append(f"r={self.rank} on {'/'.join(t.removesuffix('_proj') for t in self.targets)}")
        parts += [f"batch {self.batch} x seq {self.seq_len}",
                  "grad checkpointing" if self.gradient_checkpointing else "no checkpointing",
                  self.optimizer, self.device]
        return ", ".join(parts)


PART_NAMES = ("base_weights", "quant_constants", "unquantized", "adapters", "gradients", "optimizer",
              "activations", "overhead")
PART_LABELS = {
    "base_weights": "base weights (decoder linears)",
    "quant_constants": "quantization constants",
    "unquantized": "unquantized (embed, head, norms)",
    "adapters": "LoRA adapters",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "overhead": "CUDA context (overhead)",
}
HEAD_COPY_LABEL = "lm_head 16-bit copy"  # autocast's, inside activations; see estimate_activations


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted device memory of one training step, in bytes, part by part."""

    model: str
    settings: PlanSettings
    layout: ModelLayout = field(repr=False)
    base_weights: int
    quant_constants: int
    unquantized: int
    adapters: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    activation_detail: ActivationEstimate = field(repr=False)
    total_params: int
    trainable_params: int
    notes: tuple[str, ...] = ()
    config: Any = field(default=None, repr=False, compare=False)

    @property
    def parts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in PART_NAMES}

    @property
    def static(self) -> int:
        """What the loaded model (and adapters) occupy before training starts."""
        return self.base_weights + self.quant_constants + self.unquantized + self.adapters

    @property
    def model_bytes(self) -> int:
        """The loaded base model alone: weights, quantization constants, unquantized parts."""
        return self.base_weights + self.quant_constants + self.unquantized

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, device_bytes: int | float) -> bool:
        """True when the whole plan fits in `device_bytes`."""
        if isinstance(device_bytes, bool) or not isinstance(device_bytes, numbers.Real) or device_bytes != device_bytes:
            raise ValueError(f"fits() takes the device's memory in bytes (e.g. 16 * GIB, or profile.memory_bytes), "
                             f"got {device_bytes!r}; plan.verdict(profile) judges a HardwareProfile.")
        return self.total <= device_bytes

    def summary(self) -> str:
        """A table of every part in GiB, for printing in a notebook."""
        width = max(len(label) for label in PART_LABELS.values())
        lines = [f"{self.model}: {self.settings.describe()}",
                 f"params: {self.total_params / 1e9:.3f} B total, {self.trainable_params / 1e6:.2f} M trainable"]
        for name, value in self.parts.items():
            share = 100 * value / self.total if self.total else 0.0
            lines.append(f"  {PART_LABELS[name]:<{width}} {value / GIB:9.3f} GiB  {share:5.1f}%")
            head_copy = self.activation_detail.head_weight_copy
            if name == "activations" and head_copy:  # on its own line: part of what an fp32 head costs on a T4
                lines.append(f"  {'  incl. ' + HEAD_COPY_LABEL:<{width}} {head_copy / GIB:9.3f} GiB")
        lines.append(f"  {'total':<{width}} {self.total / GIB:9.3f} GiB")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def replan(self, **changes) -> "MemoryPlan":
        """The same plan with some settings changed, e.g. `plan.replan(seq_len=256)`.

        Changing `method` re-derives the quantization and dtypes from the new
        method; changing `compute_dtype` re-derives the weight dtypes; pass
        them explicitly to keep them.
        """
        s = self.settings
        kwargs: dict[str, Any] = dict(
            method=s.method, rank=s.rank, targets=s.targets or "all-linear", batch=s.batch, seq_len=s.seq_len,
            gradient_checkpointing=s.gradient_checkpointing, optimizer=s.optimizer,
            compute_dtype=s.compute_dtype, device=s.device)
        if "method" not in changes:
            kwargs.update(quantization=s.quantization, double_quant=s.double_quant)
            if "compute_dtype" not in changes:
                kwargs.update(weight_dtype=s.weight_dtype, unquantized_dtype=s.unquantized_dtype)
        kwargs.update(changes)
        return plan_memory(self.config, name=self.model, **kwargs)

    def verdict(self, profile: HardwareProfile) -> Verdict:
        """Does this plan fit `profile`'s device, and if not, what would?"""
        if not isinstance(profile, HardwareProfile):
            raise ValueError(f"verdict() takes a HardwareProfile (course_utils.hardware.detect(), or T4, A100_40GB "
                             f"from course_utils.memory), got {profile!r}.")
        return verdict(self, profile)

    fits_on = verdict


def plan_memory(
    config: Any,
    method: str = "qlora",
    *,
    rank: int = 16,
    targets: str | Iterable[str] = "all-linear",
    batch: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = False,
    optimizer: str = "adamw_torch",
    quantization: str | None = "auto",
    double_quant: bool | None = None,
    compute_dtype: torch.dtype | str | None = None,
    weight_dtype: torch.dtype | str | None = None,
    unquantized_dtype: torch.dtype | str | None = None,
    device: str | None = None,
    profile: HardwareProfile | None = None,
    name: str | None = None,
) -> MemoryPlan:
    """Predict the memory of fine-tuning `config` with full FT, LoRA or QLoRA.

    config: a transformers config, a dict, a shipped short name ("qwen2.5-7b")
        or anything `load_config` accepts. Nothing is downloaded.
    method: "full" (every weight trains), "lora" (frozen base in `weight_dtype`,
        or quantized if `quantization` is given), "qlora" (LoRA on a 4-bit base:
        nf4 with double quantization unless told otherwise).
    rank, targets: LoRA rank and modules ("attention", "all-linear", or suffixes).
    batch, seq_len: tokens per step = batch x seq_len (per device, per micro-batch).
    optimizer: "adamw_torch", "paged_adamw_32bit", "adamw_8bit", "paged_adamw_8bit" or "sgd".
    quantization: None, "int8", "fp4", "nf4"; "auto" = nf4 for qlora, None otherwise.
    compute_dtype: the matmul dtype; default from `profile` (fp32 CPU, fp16 T4,
        bf16 Ampere+), else bf16.
    weight_dtype: dtype of unquantized linear weights; default fp32 for full FT
        (mixed precision keeps fp32 master weights), else the compute dtype.
    unquantized_dtype: dtype of embeddings, lm_head, norms and biases; default
        the weight dtype. `peft.prepare_model_for_kbit_training` upcasts them to
        fp32: pass torch.float32 to plan for that. Under 16-bit compute an lm_head
        in another dtype also costs autocast's 16-bit copy of it, saved for backward
        (in `activations`; see `estimate_activations`).
    device: "cuda" or "cpu" (decides the CUDA-context overhead); default from `profile`, else "cuda".
    """
    settings = _check_settings(method, rank, batch, seq_len, gradient_checkpointing, optimizer, quantization,
                               double_quant, compute_dtype, weight_dtype, unquantized_dtype, device, profile)
    if name is None and isinstance(config, str):
        name = config
    config = load_config(config)
    layout = model_layout(config)
    target_layers = resolve_targets(layout, targets) if settings.method != "full" else ()
    if settings.method != "full":
        too_big = [lin.name for lin in target_layers if settings.rank > min(lin.in_features, lin.out_features)]
        if too_big:
            smallest = min(min(lin.in_features, lin.out_features) for lin in target_layers)
            raise ValueError(f"rank={settings.rank} exceeds min(d, k) = {smallest} of {too_big[0]}: "
                             f"a rank above the matrix's smaller side adds nothing; use rank <= {smallest}.")
    settings = replace(settings, targets=tuple(dict.fromkeys(lin.suffix for lin in target_layers)))

    weight_bytes = _bytes_per(settings.weight_dtype)
    other_bytes = _bytes_per(settings.unquantized_dtype)
    base = constants = 0
    for lin in layout.linears:
        if settings.quantization is None:
            base += lin.weight_params * weight_bytes
        else:
            w, c = quantized_linear_bytes(lin.weight_params, lin.out_features, settings.quantization,
                                          settings.double_quant)
            base += w
            constants += c
    unquantized = layout.other_params * other_bytes + layout.buffer_bytes

    if settings.method == "full":
        adapters = 0
        trainable = [(lin.weight_params, weight_bytes) for lin in layout.linears]
        trainable += [(n, other_bytes) for n in layout.other_tensors]
        fp32_trainable = sum(n for n, size in trainable if size == 4)
    else:
        trainable = []
        for lin in target_layers:
            trainable += [(settings.rank * lin.in_features, 4), (lin.out_features * settings.rank, 4)]
        adapters = sum(n * size for n, size in trainable)
        fp32_trainable = sum(n for n, _ in trainable)
    gradients = sum(n * size for n, size in trainable)
    optimizer_bytes = optimizer_state_bytes(settings.optimizer, trainable)
    residual_dtype = settings.unquantized_dtype
    acts = estimate_activations(layout, target_layers, method=settings.method, rank=settings.rank,
                                batch=settings.batch, seq_len=settings.seq_len,
                                gradient_checkpointing=settings.gradient_checkpointing,
                                compute_dtype=settings.compute_dtype, residual_dtype=residual_dtype,
                                fp32_trainable_params=fp32_trainable,
                                head_weight_dtype=settings.unquantized_dtype)
    notes = []
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and settings.seq_len > max_positions:
        notes.append(f"seq_len {settings.seq_len} exceeds the model's max_position_embeddings {max_positions}.")
    if settings.optimizer.startswith("paged") and settings.device == "cuda":
        notes.append("paged optimizer states live in unified memory: under pressure the driver moves them to CPU RAM.")
    return MemoryPlan(
        model=name or getattr(config, "_name_or_path", "") or layout.model_type,
        settings=settings, layout=layout,
        base_weights=base, quant_constants=constants, unquantized=unquantized, adapters=adapters,
        gradients=gradients, optimizer=optimizer_bytes, activations=acts.total,
        overhead=CUDA_CONTEXT_BYTES if settings.device == "cuda" else 0,
        activation_detail=acts, total_params=layout.total_params,
        trainable_params=sum(n for n, _ in trainable), notes=tuple(notes), config=config,
    )


def _check_settings(method, rank, batch, seq_len, gradient_checkpointing, optimizer, quantization, double_quant, compute_dtype,
                    weight_dtype, unquantized_dtype, device, profile) -> PlanSettings:
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {METHODS}.")
    for label, value in (("batch", batch), ("seq_len", seq_len), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{label} must be a positive integer, got {value!r}.")
    batch, seq_len, rank = int(batch), int(seq_len), int(rank)  # NumPy integers too
    if not isinstance(gradient_checkpointing, bool):
        raise ValueError(f"gradient_checkpointing must be True or False, got {gradient_checkpointing!r} "
                         f"({type(gradient_checkpointing).__name__}); True trades ~30% more compute for far less "
                         "activation memory.")
    if double_quant is not None and not isinstance(double_quant, bool):
        raise ValueError(f"double_quant must be True, False or None (None: on for QLoRA), got {double_quant!r}.")
    if method != "full" and rank <= 0:
        raise ValueError(f"rank must be a positive integer (try 8 or 16), got {rank}.")
    if batch <= 0:
        raise ValueError(f"batch must be at least 1 (use gradient accumulation for larger effective batches), got {batch}.")
    if seq_len <= 0:
        raise ValueError(f"seq_len must be at least 1 token, got {seq_len}.")
    if not isinstance(optimizer, str):
        raise ValueError(f"optimizer must be one name such as 'adamw_torch', got {optimizer!r}; choose one of "
                         f"{OPTIMIZERS}.")
    optimizer = OPTIMIZER_ALIASES.get(optimizer, optimizer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}: choose one of {OPTIMIZERS}.")
    if quantization == "auto":
        quantization = "nf4" if method == "qlora" else None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}: choose one of {QUANTIZATIONS}.")
    if method == "full" and quantization is not None:
        raise ValueError("Full fine-tuning updates every weight, which cannot stay quantized: "
                         "use quantization=None, or method='qlora' to train adapters on a quantized base.")
    if method == "qlora" and quantization not in ("nf4", "fp4"):
        raise ValueError(f"QLoRA needs a 4-bit base (quantization='nf4' or 'fp4'), not {quantization!r}; "
                         "for LoRA on an int8 or 16-bit base use method='lora'.")
    if double_quant is None:
        double_quant = method == "qlora"
    if double_quant and quantization not in ("nf4", "fp4"):
        raise ValueError(f"double_quant applies to 4-bit formats only (fp4, nf4), not {quantization!r}; drop it.")
    if device is None:
        device = profile.device if profile is not None else "cuda"
    if device not in ("cuda", "cpu", "mps"):
        raise ValueError(f"Unknown device {device!r}: use 'cuda', 'cpu' or 'mps'.")
    default_compute = profile.compute_dtype if profile is not None else torch.bfloat16
    compute = _dtype(compute_dtype, default_compute, "compute_dtype")
    weights = _dtype(weight_dtype, torch.float32 if method == "full" else compute, "weight_dtype")
    other = _dtype(unquantized_dtype, weights if quantization is None else compute, "unquantized_dtype")
    return PlanSettings(method, rank, (), batch, seq_len, bool(gradient_checkpointing), optimizer, quantization,
                        bool(double_quant), compute, weights, other, device)
