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


_CHANGES_OR_NOT = {"unchanged": ("same", "no", "no change", "does not change", "equal", "identical", "not changed"),
                   "changes": ("changed", "change", "yes", "different", "differs")}


def _dora_reference(layer: Any, magnitude: _torch.Tensor, x: _torch.Tensor, norm_dim: int = 1,
                    normalise: bool = True) -> _torch.Tensor:
    """DoRA's output: magnitude * (W + scaling B A) / ||W + scaling B A|| (norm of each row), applied to x."""
    W = layer.base_layer.weight.detach()
    adapted = W + layer.scaling * layer.lora_B.detach() @ layer.lora_A.detach()
    norm = adapted.norm(dim=norm_dim)
    factor = (magnitude / norm) if normalise else magnitude
    weight = (factor[:, None] if norm_dim == 1 or not normalise else factor[None, :]) * adapted
    return _torch.nn.functional.linear(x, weight, layer.base_layer.bias)


def _peft_dora(layer: Any, magnitude: _torch.Tensor | None = None):
    """PEFT's LoRA layer with use_dora=True on a copy of `layer`'s weights (A, B and, if given, the magnitude)."""
    import copy
    from collections import OrderedDict

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=layer.r, lora_alpha=layer.lora_alpha, use_rslora=layer.use_rslora,
                        target_modules=["adapted"], use_dora=True)
    model = get_peft_model(_torch.nn.Sequential(OrderedDict(adapted=copy.deepcopy(layer.base_layer))), config)
    theirs = model.base_model.model.adapted
    with _torch.no_grad():
        theirs.lora_A["default"].weight.copy_(layer.lora_A)
        theirs.lora_B["default"].weight.copy_(layer.lora_B)
        if magnitude is not None:
            theirs.lora_magnitude_vector["default"].weight.copy_(magnitude)
    return model.eval(), theirs


def check_dora_experiment(prediction: Any, observed: Any, dora_forward: Any, magnitude: Any, layer: Any,
                          x: Any) -> Feedback:
    """Experiment: DoRA on a LoRA layer at initialisation (B = 0); predict whether the output changes, then measure.

    `dora_forward(layer, magnitude, x)` is the learner's DoRA output; it is compared with PEFT's
    `use_dora=True` on the same weights, at initialisation and with a non-zero B and magnitude.
    """
    import copy

    from .lesson_01 import _choice, _predict_observe

    x = _torch.as_tensor(x).detach()
    with _torch.no_grad():
        base = layer.base_layer(x)
        peft_model, theirs = _peft_dora(layer)
        peft_magnitude = theirs.lora_magnitude_vector["default"].weight.detach().clone()
        peft_change = (peft_model(x) - base).abs().max().item()
    scale = base.abs().max().item()
    truth = "unchanged" if peft_change <= 1e-5 * scale else "changes"
    trained = copy.deepcopy(layer)  # as after some training: B and the magnitude moved
    g = _torch.Generator().manual_seed(0)
    with _torch.no_grad():
        trained.lora_B.copy_(0.02 * _torch.randn(trained.lora_B.shape, generator=g))
        moved = peft_magnitude * (1 + 0.1 * _torch.randn(peft_magnitude.shape, generator=g))
        expected_trained = _peft_dora(trained, moved)[0](x)
    trained_scale = expected_trained.abs().max().item()

    def close(a, b, scale_of):
        return bool(_torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale_of))

    def judge(prediction, observed):
        said = _choice(prediction, _CHANGES_OR_NOT)
        if not callable(dora_forward):
            return "pass your function itself as dora_forward (def dora_forward(layer, magnitude, x): ...)."
        m = _torch.as_tensor(magnitude).detach().float().reshape(-1)
        W = layer.base_layer.weight.detach()
        if m.numel() != W.shape[0]:
            return (f"the magnitude has {m.numel()} entries; it needs one per output feature ({W.shape[0]}): "
                    "the norm of each row of W.")
        if not close(m, peft_magnitude, peft_magnitude.abs().max().item()):
            if close(m, W.norm(dim=0), peft_magnitude.abs().max().item()):
                return "those are the column norms; DoRA's magnitude starts at the norm of each row of W (dim=1)."
            return "the magnitude should start at the norm of each row of W: layer.base_layer.weight.norm(dim=1)."
        with _torch.no_grad():
            theirs_trained = _torch.as_tensor(dora_forward(trained, moved.clone(), x)).detach()
            if theirs_trained.shape != expected_trained.shape:
                return f"dora_forward returned shape {tuple(theirs_trained.shape)}, expected {tuple(expected_trained.shape)}."
            if not close(theirs_trained, expected_trained, trained_scale):
                if close(theirs_trained, _dora_reference(trained, moved, x, norm_dim=0), trained_scale):
                    return "dora_forward divides by column norms; divide each row of W + scaling B A by its own norm."
                if close(theirs_trained, _dora_reference(trained, moved, x, normalise=False), trained_scale):
                    return "dora_forward forgets to divide W + scaling B A by its row norms (the direction has norm 1)."
                if close(theirs_trained + trained.base_layer(x), expected_trained, trained_scale):
                    return "dora_forward returns only the change; return the whole output, as the layer would."
                return ("with a non-zero B, dora_forward differs from PEFT's use_dora=True: compute "
                        "magnitude * (W + scaling B A) / (row norms of W + scaling B A), then apply it to x.")
            measured = (_torch.as_tensor(dora_forward(layer, m.clone(), x)).detach() - base).abs().max().item()
        value = float(_as_number(observed))
        if abs(value - measured) > max(1e-3 * measured, 1e-6 * scale):
            return (f"{value:.3g} is not what your dora_forward gives at initialisation: the largest "
                    f"|dora_forward(layer, magnitude, x) - layer.base_layer(x)| is {measured:.3g}.")
        if said != truth:
            rounding = " (float32 rounding)" if truth == "unchanged" and measured > 0 else ""
            return (f"you measured it yourself: the largest change is {measured:.1e}{rounding} on outputs up to "
                    f"{scale:.2f} "
                    f"(PEFT's DoRA layer: {peft_change:.1e}), so the output is {truth}. Why: B = 0 makes "
                    "W + scaling B A = W, and the magnitude starts at the row norms of W, so "
                    "||W|| * W / ||W|| = W: like LoRA, DoRA starts exactly at the pretrained layer, and only "
                    "training B, A and the magnitude moves it.")
        return None

    return _predict_observe(
        "DoRA experiment", prediction, observed, judge,
        success=f"correct: your DoRA layer matches PEFT's use_dora=True, and at initialisation it is the pretrained "
                f"layer (PEFT's largest change: {peft_change:.1e}; yours may differ by float32 rounding, about 1e-7 "
                f"of the outputs). The magnitude vector adds {layer.out_features} trainable numbers to the adapter.")
