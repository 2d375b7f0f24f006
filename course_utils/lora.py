"""LoRA in plain torch, with the paper's and PEFT's names and shapes.

Lesson 03 builds this step by step; later lessons import it. A `LoraLinear`
wraps (does not inherit from) a frozen `nn.Linear` called `base_layer` and adds
a trainable low-rank path:

    h = base_layer(x) + scaling * lora_B(lora_A(dropout(x)))
      = W x + b + scaling * B A x

with `lora_A` of shape (r, in_features), `lora_B` of shape (out_features, r)
and `scaling = lora_alpha / r` (or `lora_alpha / sqrt(r)` with rsLoRA). A is
drawn like an nn.Linear weight (kaiming-uniform, a=sqrt(5)), B starts at zero,
so at step 0 the layer computes exactly what the base layer computes.

Merging (W <- W + scaling * B A) happens only when you call `merge()`, never
as a side effect of `.train()` or `.eval()`, so you always know which weights
a forward pass used. The names mirror PEFT (`LoraConfig`, `r`, `lora_alpha`,
`lora_dropout`, `target_modules`, `use_rslora`, `merge_and_unload`), so the
layer can be compared with PEFT's line by line (tests/test_lora.py does).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LoraConfig:
    """The settings of a LoRA adapter; defaults are PEFT's.

    r: rank of the update B A; r (in + out) trainable parameters per matrix.
    lora_alpha: numerator of the scaling; with alpha fixed, changing r does
        not require retuning the learning rate as much.
    lora_dropout: dropout on the input of the LoRA path only (0 = none).
    target_modules: names of the nn.Linear modules to adapt, matched by the
        end of their full name ("q_proj" matches "model.layers.0.self_attn.q_proj").
        PEFT's default for Llama-style models is q_proj and v_proj.
    use_rslora: scale by lora_alpha / sqrt(r) instead of lora_alpha / r
        (rank-stabilised LoRA, Kalajdzievski 2023).
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: Sequence[str] = field(default_factory=lambda: ("q_proj", "v_proj"))
    use_rslora: bool = False

    def __post_init__(self) -> None:
        self.r = check_rank(self.r)
        self.lora_alpha = check_alpha(self.lora_alpha)
        self.lora_dropout = check_dropout(self.lora_dropout)
        self.use_rslora = check_flag("use_rslora", self.use_rslora)
        if isinstance(self.target_modules, str):
            raise ValueError(f"target_modules must be a list of module names, got the string {self.target_modules!r}; "
                             f"write [{self.target_modules!r}] for a single module.")
        if len(self.target_modules) == 0:
            raise ValueError("target_modules is empty: name at least one nn.Linear, e.g. ['q_proj', 'v_proj'].")
        self.target_modules = tuple(self.target_modules)

    @property
    def scaling(self) -> float:
        return lora_scaling(self.r, self.lora_alpha, self.use_rslora)


def check_rank(r: object, limit: int | None = None, where: str = "") -> int:
    """`r` as an int, or a ValueError saying what was given, what is allowed and a usual value.

    Booleans are refused although Python counts True as the int 1: `r=True`
    is a slip, not a rank. NumPy integers are accepted.
    """
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise ValueError(f"r must be a positive integer (the rank of B A), got {r!r} ({type(r).__name__}); "
                         "usual values are 4, 8 or 16.")
    if r <= 0 or (limit is not None and r > limit):
        allowed = f"between 1 and min(in_features, out_features) = {limit}{where}" if limit else "at least 1"
        raise ValueError(f"r must be an integer {allowed}, got {r!r}. "
                         "A larger rank adds parameters without adding expressiveness; usual values are 4, 8 or 16.")
    return int(r)


def check_alpha(lora_alpha: object) -> float:
    """`lora_alpha` as a number, refusing 0, negatives, NaN, infinity and non-numbers."""
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, numbers.Real):
        raise ValueError(f"lora_alpha must be a positive number, got {lora_alpha!r} ({type(lora_alpha).__name__}); "
                         "PEFT's default is 8, and 2 x r is common.")
    if not math.isfinite(lora_alpha) or lora_alpha <= 0:
        raise ValueError(f"lora_alpha must be a finite positive number (the update is scaled by lora_alpha / r), "
                         f"got {lora_alpha!r}; PEFT's default is 8, and 2 x r is common.")
    return lora_alpha


def check_dropout(lora_dropout: object) -> float:
    """`lora_dropout` as a probability in [0, 1)."""
    if isinstance(lora_dropout, bool) or not isinstance(lora_dropout, numbers.Real) or not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"lora_dropout is a probability in [0, 1), got {lora_dropout!r}; "
                         "usual values are 0 (none) to 0.1.")
    return float(lora_dropout)


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return value


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """lora_alpha / r (LoRA paper), or lora_alpha / sqrt(r) (rsLoRA)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


class LoraLinear(nn.Module):
    """A frozen nn.Linear plus a trainable rank-r update: W x + b + scaling * B A x."""

    def __init__(self, base_layer: nn.Linear, r: int = 8, lora_alpha: float = 8,
                 lora_dropout: float = 0.0, use_rslora: bool = False) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(f"LoraLinear wraps an nn.Linear, got {type(base_layer).__name__}.")
        in_features, out_features = base_layer.in_features, base_layer.out_features
        r = check_rank(r, min(in_features, out_features), f" for this {out_features} x {in_features} layer")
        lora_alpha, lora_dropout = check_alpha(lora_alpha), check_dropout(lora_dropout)
        use_rslora = check_flag("use_rslora", use_rslora)
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)  # the pretrained weight stays frozen
        self.in_features, self.out_features = in_features, out_features
        self.r, self.lora_alpha, self.use_rslora = r, lora_alpha, use_rslora
        self.scaling = lora_scaling(r, lora_alpha, use_rslora)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        weight = base_layer.weight
        # Like PEFT (`autocast_adapter_dtype=True`): a 16-bit base gets fp32 adapters, so the small
        # updates of training are not rounded away; the LoRA path then computes in fp32.
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.empty(out_features, r, dtype=dtype, device=weight.device))
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        # A like an nn.Linear weight (as loralib and PEFT do); B = 0 so B A = 0:
        # the adapted model starts exactly where the pretrained one is.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged or not), for code that inspects `layer.weight`."""
        return self.base_layer.weight

    def delta_weight(self) -> torch.Tensor:
        """Delta W = scaling * B A, of shape (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:  # the update already lives in base_layer.weight
            return result
        # Same operations as PEFT: the input in the adapter's dtype, B(A(dropout(x))) * scaling added
        # (in the wider dtype), the sum returned in the base layer's output dtype.
        update = F.linear(F.linear(self.lora_dropout(x.to(self.lora_A.dtype)), self.lora_A), self.lora_B)
        return (result + update * self.scaling).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scaling * B A: one matmul per layer at inference, no extra latency."""
        if self.merged:
            raise RuntimeError("This layer is already merged; call unmerge() before merging again.")
        self.base_layer.weight += self.delta_weight()  # in place: added in fp32, rounded once to W's dtype
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A (exact up to float rounding)."""
        if not self.merged:
            raise RuntimeError("This layer is not merged; there is nothing to unmerge.")
        self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"lora_alpha={self.lora_alpha}, scaling={self.scaling:.4g}, use_rslora={self.use_rslora}, "
                f"merged={self.merged}")


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == target or name.endswith("." + target) for target in targets)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """Every (full name, LoraLinear) in the model."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Wrap every nn.Linear whose name ends in one of `config.target_modules` in a LoraLinear.

    Changes `model` in place and returns it, with only the LoRA parameters
    trainable (like PEFT's `get_peft_model`). Raises ValueError when a target
    matches no nn.Linear, naming the ones that exist.
    """
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    wrapped = {name for name, _ in lora_layers(model)}
    for target in config.target_modules:
        hits = [name for name, module in model.named_modules() if _matches(name, [target])]
        if not any(name in linear_names for name in hits):
            available = sorted({name.removesuffix(".base_layer").rpartition(".")[2] for name in linear_names})
            if hits and isinstance(model.get_submodule(hits[0]), LoraLinear):
                what = "those layers already have LoRA; merge_lora(model) first to add a new adapter"
            elif hits:
                what = f"it matches {type(model.get_submodule(hits[0])).__name__} modules, not nn.Linear"
            else:
                what = "no module has that name"
            raise ValueError(f"target_modules entry {target!r} matches no nn.Linear ({what}). "
                             f"nn.Linear names in this model: {available}.")
    targets = [name for name in linear_names if _matches(name, config.target_modules)
               and not any(name.startswith(w + ".") for w in wrapped)]
    for name in targets:  # check every rank before changing anything
        layer = model.get_submodule(name)
        if config.r > min(layer.in_features, layer.out_features):
            raise ValueError(f"r={config.r} exceeds min(in, out) = {min(layer.in_features, layer.out_features)} "
                             f"of {name} ({layer.out_features} x {layer.in_features}); choose a smaller r.")
    for name in targets:
        _replace(model, name, LoraLinear(model.get_submodule(name), config.r, config.lora_alpha,
                                         config.lora_dropout, config.use_rslora))
    mark_only_lora_trainable(model)
    return model


def mark_only_lora_trainable(model: nn.Module) -> nn.Module:
    """Freeze every parameter except lora_A and lora_B."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith("lora_A") or name.endswith("lora_B"))
    return model


def count_trainable(model: nn.Module) -> int:
    """How many parameters will receive gradients (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_budget(model: nn.Module, targets: Sequence[str], r: int) -> int:
    """Trainable parameters of a rank-`r` LoRA on `targets`: r (in + out) for every targeted nn.Linear.

    Computed from the base model's shapes before any adapter exists, so a plan
    (or a fair comparison of two target sets, lesson 05) needs no PEFT model;
    lesson 04 checks it against PEFT's own count. A module is targeted when the
    last part of its name is one of `targets`, as PEFT matches `target_modules`;
    on a model PEFT already wrapped, the wrapped layer (`.base_layer`) counts.
    """
    check_rank(r)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.removesuffix(".base_layer").rsplit(".", 1)[-1] in targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoraLinear into its base layer and put the plain nn.Linear back.

    Like PEFT's `merge_and_unload`: the result has no LoRA modules left, the
    same outputs (up to float rounding) and no extra inference cost. Changes
    `model` in place and returns it.
    """
    for name, layer in list(lora_layers(model)):
        if not layer.merged:
            layer.merge()
        _replace(model, name, layer.base_layer)
    return model
