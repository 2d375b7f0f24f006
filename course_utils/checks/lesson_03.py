"""Self-checks of Lesson 03: LoRA from scratch (parameter counts, scaling, merging)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _as_count, _as_number, _close, _linear_shapes, run_check


def check_lora_trainable_count(answer: Any, model: Any, target_modules: Any, r: int) -> Feedback:
    """Trainable LoRA parameters for rank r on the named modules: r (in + out) per matrix."""
    shapes = _linear_shapes(model, target_modules)
    expected = sum(r * (i + o) for _, i, o in shapes)
    frozen = sum(i * o for _, i, o in shapes)
    first_layer = sum(r * (i + o) for name, i, o in shapes if ".0." in f".{name}.")

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == frozen:
            return "that is the number of weights LoRA leaves frozen; count lora_A (r x in) and lora_B (out x r)."
        if first_layer and value == first_layer:
            return f"that is one decoder layer; the targets appear in {len(shapes)} matrices across all layers."
        if value == expected // 2 or value == sum(r * i for _, i, _ in shapes) or value == sum(r * o for _, _, o in shapes):
            return "you counted one of the two matrices; each target gets lora_A (r x in) and lora_B (out x r)."
        return (f"{value:,} is not the count; look at the in/out features of each target "
                f"(k_proj and v_proj are narrower than q_proj here).")

    return run_check("LoRA trainable parameters", answer, find_problem,
                     success=f"correct: {expected:,} trainable vs {frozen:,} frozen in those matrices.")


def check_rslora_scaling(answer: Any, r: int, lora_alpha: float) -> Feedback:
    """The scaling PEFT applies with use_rslora=True: lora_alpha / sqrt(r)."""
    expected = lora_alpha / _math.sqrt(r)

    def find_problem(a):
        value = _as_number(a)
        if _close(value, expected):
            return None
        if _close(value, lora_alpha / r):
            return "that is plain LoRA's lora_alpha / r; rsLoRA divides by sqrt(r)."
        if _close(value, lora_alpha * _math.sqrt(r)):
            return "rsLoRA divides lora_alpha by sqrt(r); you multiplied."
        if _close(value, _math.sqrt(lora_alpha / r)):
            return "only r goes under the square root: lora_alpha / sqrt(r)."
        return f"{value:.6g} is not lora_alpha / sqrt(r) for r={r}, lora_alpha={lora_alpha}."

    return run_check("rsLoRA scaling", answer, find_problem, success=f"correct: {expected:.6g} (plain LoRA: {lora_alpha / r:.6g}).")


def check_merged_weight(answer: Any, layer: Any) -> Feedback:
    """W + scaling * B A for an unmerged LoRA layer (base_layer, lora_A, lora_B, scaling)."""
    if getattr(layer, "merged", False):
        raise ValueError("pass an unmerged layer: after merge() its base weight already holds the update.")
    with _torch.no_grad():
        W = layer.base_layer.weight.detach().to(_torch.float64)
        BA = layer.lora_B.detach().to(_torch.float64) @ layer.lora_A.detach().to(_torch.float64)
        expected = W + layer.scaling * BA
    scale = expected.abs().max().item()

    def close(x, y):
        return bool(_torch.allclose(x, y, rtol=1e-4, atol=1e-5 * scale))

    def find_problem(a):
        value = _torch.as_tensor(a).detach().to(_torch.float64).cpu()
        if value.shape != expected.shape:
            return (f"shape {tuple(value.shape)}, expected {tuple(expected.shape)} = (out_features, in_features): "
                    "B (out x r) times A (r x in), in that order.")
        if close(value, expected):
            return None
        if close(value, W + BA):
            return f"the update is scaled: W + scaling * B A with scaling = {layer.scaling:.4g}."
        if close(value, layer.scaling * BA):
            return "that is only Delta W = scaling * B A; the merged weight adds it to the frozen W."
        if close(value, W):
            return "that is the frozen W alone; add scaling * B A."
        return "not W + scaling * B A; compute it from layer.base_layer.weight, layer.lora_B, layer.lora_A, layer.scaling."

    return run_check("merged weight", answer, find_problem,
                     success="correct: the merged layer needs one matmul, and gives the adapted outputs.")
