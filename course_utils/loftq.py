"""LoftQ's starting point for an adapter on a 4-bit base (lesson 09).

QLoRA starts B at zero, so the adapter first has to undo the quantization
error W - Q(W) of lesson 08 before it can learn the task. LoftQ (Li et al.
2023) starts B A at the best rank-r approximation of that error instead: the
truncated SVD of lesson 01, applied to lesson 08's error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .qlora import dequantize_weight, four_bit_modules


def loftq_factors(error: torch.Tensor, r: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lora_A, lora_B) with scaling x B @ A the best rank-r approximation of `error` = W - Q(W).

    The truncated SVD is the best rank-r approximation in the Frobenius norm
    (Eckart-Young, lesson 01); its singular values are split evenly between the
    factors (sqrt(S) on each side, as LoftQ does) and divided by LoRA's scaling,
    because the adapter adds scaling x B A, not B A.
    """
    if r <= 0 or r > min(error.shape):
        raise ValueError(f"r must be between 1 and {min(error.shape)} for a {tuple(error.shape)} matrix, got {r}.")
    if not scaling or not math.isfinite(scaling):
        raise ValueError(f"scaling must be a finite non-zero number (lora_alpha / r), got {scaling!r}.")
    U, S, Vh = torch.linalg.svd(error.double(), full_matrices=False)
    root = (S[:r] / scaling).sqrt()
    lora_B = U[:, :r] * root
    lora_A = root[:, None] * Vh[:r]
    return lora_A.float(), lora_B.float()


@dataclass
class LoftQReport:
    """Per 4-bit layer: ||W - Q(W)||_F before LoftQ and ||W - (Q(W) + scaling B A)||_F after."""

    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    @property
    def total_before(self) -> float:
        return math.sqrt(sum(v * v for v in self.before.values()))

    @property
    def total_after(self) -> float:
        return math.sqrt(sum(v * v for v in self.after.values()))

    @property
    def removed(self) -> float:
        """Share of the squared quantization error (summed over layers) that the initial adapter cancels."""
        return 1 - (self.total_after / self.total_before) ** 2


@torch.no_grad()
def apply_loftq(peft_model: torch.nn.Module, originals: dict[str, torch.Tensor],
                adapter_name: str = "default") -> LoftQReport:
    """Give every LoRA layer on a 4-bit base LoftQ's starting point; return the errors before and after.

    `originals` maps module names (as in the unquantized model) to the weights
    W before quantization (`original_weights`). The 4-bit base Q(W) stays as it
    is: this is LoftQ with one alternating step, the variant that fits a base
    already loaded in 4 bits (PEFT's `replace_lora_weights_loftq` does the same,
    without the scaling). Further LoftQ steps would re-quantize W - scaling B A and
    so change the stored base.
    """
    report = LoftQReport()
    for name, module in four_bit_modules(peft_model):
        if adapter_name not in getattr(module, "lora_A", {}):
            continue
        weight = originals[name].float().to(module.lora_A[adapter_name].weight.device)
        error = weight - dequantize_weight(module).to(weight.device)
        scaling = module.scaling[adapter_name]
        lora_A, lora_B = loftq_factors(error, module.r[adapter_name], scaling)
        module.lora_A[adapter_name].weight.copy_(lora_A)
        module.lora_B[adapter_name].weight.copy_(lora_B)
        report.before[name] = error.norm().item()
        report.after[name] = (error - scaling * lora_B @ lora_A).norm().item()
    if not report.before:
        raise ValueError("no LoRA layer on a 4-bit base found: apply LoftQ to get_peft_model(<a 4-bit model>, ...).")
    return report
