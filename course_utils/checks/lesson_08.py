"""Self-checks of Lesson 08: QLoRA storage and compute (stored bits of a real layer, 4-bit model size, what stays unquantized, and the experiment: bf16 compute)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _q_number, fraction_slip, is_placeholder, run_check


def _nf4_stored_tensors(layer: Any) -> tuple[list[_torch.Tensor], int]:
    """The tensors a bitsandbytes 4-bit weight stores (without the two fixed code tables), and its numel."""
    weight = getattr(layer, "weight", layer)
    state = getattr(weight, "quant_state", None)
    if state is None:
        raise ValueError("pass a bitsandbytes Linear4bit layer (or its weight), e.g. model.model.layers[0].mlp.down_proj")
    tensors = [weight.data, state.absmax]
    if getattr(state, "nested", False):
        tensors += [state.state2.absmax, state.offset]
    return tensors, int(_math.prod(state.shape))


def check_layer_stored_bits(answer: Any, layer: Any) -> Feedback:
    """Lesson 08: bits per weight that one NF4 (+DQ) layer stores: packed codes plus its block constants."""
    tensors, numel = _nf4_stored_tensors(layer)
    state = getattr(layer, "weight", layer).quant_state
    stored_bits = sum(t.numel() * t.element_size() * 8 for t in tensors)
    expected = stored_bits / numel
    tables_bits = 8 * (state.code.numel() * state.code.element_size()
                       + (state.state2.code.numel() * state.state2.code.element_size() if state.nested else 0))
    packed = tensors[0].numel()

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=1e-5):
            return None
        if _math.isclose(value, (stored_bits + tables_bits) / numel, rel_tol=1e-5):
            return "you also counted the two code tables (16 and 256 fp32 values): they are format constants; leave them out."
        if _math.isclose(value, stored_bits / packed, rel_tol=1e-5):
            return (f"the packed tensor has {packed:,} bytes holding two 4-bit codes each: divide by the layer's "
                    f"in x out = {numel:,} weights, not by the packed tensor's length.")
        if _math.isclose(value, 4.5, rel_tol=1e-4):
            return "4.5 is NF4 without double quantization; this layer stores its block scales in 8 bits."
        if _math.isclose(value, 4.0, rel_tol=1e-4):
            return "4 bits is the code alone; add the per-block constants (8-bit absmax, fp32 nested absmax, offset)."
        if _math.isclose(value, stored_bits / 8 / numel, rel_tol=1e-5):
            return "that is bytes per weight; multiply by 8 for bits."
        return "bits = 8 x (bytes of weight.data + absmax + state2.absmax + offset) / (in_features x out_features)."

    return run_check("stored bits of one NF4+DQ layer", answer, find_problem,
                     success=f"correct: {expected:.5f} bits per weight.")


def _qlora_base_bytes(config: Any, compute_dtype: Any) -> int:
    from ..memory import plan_memory

    return plan_memory(config, method="qlora", compute_dtype=compute_dtype, device="cuda").model_bytes


def check_qlora_model_bytes(answer: Any, config: Any, compute_dtype: Any = None) -> Feedback:
    """Lesson 08: bytes of a model loaded as NF4+DQ with its other parts in `compute_dtype` (default bf16)."""
    from ..memory import model_layout

    compute_dtype = compute_dtype or _torch.bfloat16
    expected = _qlora_base_bytes(config, compute_dtype)
    layout = model_layout(config)
    total = layout.total_params
    other_bytes = _torch.empty(0, dtype=compute_dtype).element_size()

    def find_problem(a):
        value = _q_number(a)
        if value <= 0:
            return "a model size is a positive number of bytes."
        if abs(value - expected) <= 0.01 * expected:
            return None
        if abs(value - expected / 2**30) <= 0.01 * expected / 2**30 or abs(value - expected / 1e9) <= 0.01 * expected / 1e9:
            return "answer in bytes, not GiB or GB (the check compares bytes)."
        if abs(value - total / 2) <= 0.02 * total / 2 or abs(value - total * 4.127 / 8) <= 0.02 * total * 4.127 / 8:
            return ("that assumes every parameter is stored in 4 bits; bitsandbytes quantizes only the decoder's "
                    "linear layers: embeddings, lm_head and norms stay in the 16-bit dtype.")
        if abs(value - layout.linear_weight_params / 2) <= 0.03 * layout.linear_weight_params / 2:
            return "that is the 4-bit linear weights alone; add the block constants and the unquantized parts."
        if abs(value - total * other_bytes) <= 0.01 * total * other_bytes:
            return "that is the whole model in 16 bits: the decoder's linear layers are stored in 4 bits."
        return ("ask the planner: plan_memory(config, method='qlora', compute_dtype=...).model_bytes "
                "(base weights + quantization constants + unquantized parts).")

    return run_check("size of the 4-bit model", answer, find_problem,
                     success=f"correct: {expected / 2**30:.2f} GiB ({expected:,} bytes).")


def check_unquantized_fraction(answer: Any, model: Any) -> Feedback:
    """Lesson 08: the fraction of a quantized model's stored bytes that are NOT quantized weights or constants."""
    from ..memory import stored_bytes

    parts = stored_bytes(model)
    total = sum(parts.values())
    expected = parts["unquantized"] / total
    seen: set[int] = set()
    params = other = 0
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_ids = {id(m.weight) for m in model.modules()
                  if isinstance(m, _torch.nn.Linear) and m is not output and m.weight is not None}
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = int(_math.prod(p.quant_state.shape)) if getattr(p, "quant_state", None) is not None else p.numel()
        params += n
        other += 0 if id(p) in linear_ids else n

    def find_problem(a):
        value = _q_number(a)
        slip = fraction_slip(value, expected, "that is the quantized part (weights and constants); the question asks "
                                              "for the rest.")
        if slip is not None:
            return slip or None
        if _math.isclose(value, other / params, rel_tol=1e-3):
            return ("that is the fraction of parameters; the question asks about bytes, and an unquantized "
                    "parameter takes 8x the bytes of a 4-bit one.")
        if _math.isclose(value, parts["unquantized"] / (parts["base_weights"] + parts["unquantized"]), rel_tol=1e-3):
            return "the total must include the quantization constants (absmax etc.) too."
        return "fraction = stored_bytes(model)['unquantized'] / sum of all stored bytes."

    return run_check("unquantized fraction", answer, find_problem,
                     success=f"correct: {expected:.1%} of the bytes are not 4-bit.")


# Experiment exercise: change one knob, predict its effect on a yardstick, then observe it.

_OUTCOMES = ("higher", "lower", "about the same")
_SYNONYMS = {"higher": ("higher", "larger", "bigger", "more", "worse", "up"),
             "lower": ("lower", "smaller", "less", "better", "down"),
             "about the same": ("about the same", "the same", "same", "unchanged", "no change", "equal")}


def _read_prediction(answer: Any) -> str:
    """One of _OUTCOMES from a learner's word ("higher", "lower", "about the same"; a few synonyms accepted)."""
    text = " ".join(str(answer).strip().lower().replace("_", " ").split())
    for outcome, words in _SYNONYMS.items():
        if text in words:
            return outcome
    raise ValueError(f"predict one of {_OUTCOMES}, got {answer!r}")


def _output_error(weight: _torch.Tensor, x: _torch.Tensor, compute_dtype: _torch.dtype) -> float:
    """||layer(x) - x @ W.T|| / ||x @ W.T|| for W stored in NF4 + DQ and computed in `compute_dtype`."""
    from ..qlora import four_bit_linear

    weight, x = weight.detach().float().cpu(), x.detach().float().cpu()
    layer = four_bit_linear(weight, "nf4", True, compute_dtype)
    with _torch.no_grad():
        exact = x @ weight.T
        return ((layer(x.to(compute_dtype)).float() - exact).norm() / exact.norm()).item()


def check_compute_dtype_experiment(prediction: Any, observed: Any, weight: _torch.Tensor, x: _torch.Tensor) -> Feedback:
    """Lesson 08, experiment: does computing an NF4 + DQ layer in bf16 instead of fp32 change its output error?

    The check recomputes both errors from `weight` and `x`, compares the
    learner's observation with them, then the prediction with the outcome
    ("about the same" means within 10%).
    """
    truth = {"float32": _output_error(weight, x, _torch.float32), "bfloat16": _output_error(weight, x, _torch.bfloat16)}
    ratio = truth["bfloat16"] / truth["float32"]
    outcome = "higher" if ratio > 1.1 else "lower" if ratio < 0.9 else "about the same"
    bf16_step = 2.0 ** -8  # bf16 keeps 8 significant bits: a relative rounding of at most half of this

    def find_problem(answer):
        predicted, seen = answer
        predicted = _read_prediction(predicted)
        if not isinstance(seen, dict) or set(seen) != set(truth):
            return ("observed should be a dict {'float32': error, 'bfloat16': error}, one relative output error "
                    "per compute dtype.")
        for name, value in truth.items():
            got = _q_number(seen[name])
            if _math.isclose(got, 100 * value, rel_tol=0.02):
                return f"your {name} error looks like a percentage ({got:.3g}); give it as a fraction."
            if not _math.isclose(got, value, rel_tol=0.02):
                return (f"your {name} error {got:.4g} is not what the layer gives ({value:.4g}): build "
                        f"four_bit_linear(weight, 'nf4', True, torch.{name}), run it on x.to(torch.{name}), and "
                        "divide ||output - x @ weight.T|| by ||x @ weight.T||.")
        if predicted != outcome:
            return (f"your observation is right; the prediction was not: the error is {outcome} with bf16 compute "
                    f"({truth['float32']:.2%} with fp32, {truth['bfloat16']:.2%} with bf16, ratio {ratio:.3f}). "
                    f"Why: NF4 rounds every weight to one of 16 levels per block, and that alone puts the output "
                    f"{truth['float32']:.1%} off. bf16 then rounds the dequantized weights and the inputs to 8 "
                    f"significant bits (at most {bf16_step / 2:.2%} each): an error many times smaller and "
                    "unrelated to NF4's, so the two add in quadrature and the total barely moves. The precision "
                    "QLoRA gives up is in the 4-bit storage, not in the 16-bit compute.")
        return None

    answer = None if is_placeholder(prediction) or is_placeholder(observed) else (prediction, observed)
    return run_check("experiment: bf16 compute", answer, find_problem,
                     success=f"correct: {truth['float32']:.2%} (fp32 compute) vs {truth['bfloat16']:.2%} (bf16): "
                             f"{outcome}. The 4-bit storage sets the error; the compute dtype hardly adds to it.")
