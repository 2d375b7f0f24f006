"""Self-checks of lesson 09: QLoRA training (paged optimizer bytes, LoftQ's best start, and the experiment: FP4 instead of NF4 as the base)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _q_number, fraction_slip, is_placeholder, run_check
from .lesson_08 import _read_prediction


def _full_finetune_tensor_sizes(config: Any) -> list[int]:
    """Element counts of every tensor a full fine-tune trains (each linear weight, embeddings, lm_head, norms, biases)."""
    from ..memory import load_config, model_layout

    layout = model_layout(load_config(config))
    return [linear.weight_params for linear in layout.linears] + list(layout.other_tensors)


def check_paged_full_finetune_bytes(answer: Any, config: Any) -> Feedback:
    """Lesson 09: bytes of optimizer state that paged_adamw_8bit puts in paged (unified) memory for a full fine-tune.

    bitsandbytes pages a tensor's two 8-bit moments (1 byte each per element)
    only when the tensor has at least 100,000 elements; the block scales and
    smaller tensors stay in ordinary GPU memory.
    """
    from ..qlora import PAGED_MIN_NUMEL

    sizes = _full_finetune_tensor_sizes(config)
    paged = [n for n in sizes if n >= PAGED_MIN_NUMEL]
    expected = 2 * sum(paged)

    def find_problem(a):
        value = _q_number(a)
        if value <= 0:
            return "a number of bytes is positive."
        if _math.isclose(value, expected, rel_tol=1e-3):
            return None
        if _math.isclose(value, expected / 2**30, rel_tol=1e-2) or _math.isclose(value, expected / 1e9, rel_tol=1e-2):
            return "answer in bytes, not GiB or GB."
        if _math.isclose(value, 2 * sum(sizes), rel_tol=1e-4):
            return (f"that pages every tensor; bitsandbytes pages only tensors of {PAGED_MIN_NUMEL:,} elements or "
                    f"more ({len(sizes) - len(paged)} small ones, the norms and biases, stay in GPU memory).")
        if _math.isclose(value, 8 * sum(paged), rel_tol=1e-3):
            return "that is paged_adamw_32bit (two fp32 moments, 8 bytes per element); the 8-bit one keeps 2 bytes."
        if _math.isclose(value, sum(paged), rel_tol=1e-3):
            return "AdamW keeps two moments per element (exp_avg and exp_avg_sq): 2 bytes per element in 8 bits."
        return (f"count the trained tensors with at least {PAGED_MIN_NUMEL:,} elements (model_layout(config): every "
                "linear weight, and other_tensors), times 2 bytes (two 8-bit moments per element).")

    return run_check("paged optimizer bytes of a full fine-tune", answer, find_problem,
                     success=f"correct: {expected / 2**30:.2f} GiB in {len(paged)} paged tensors.")


def _energy_share(error: _torch.Tensor, r: int) -> float:
    squares = _torch.linalg.svdvals(error.detach().double()).square()
    return (squares[:r].sum() / squares.sum()).item()


def check_loftq_share(answer: Any, error: _torch.Tensor, r: int) -> Feedback:
    """Lesson 09: the share of the squared quantization error ||W - Q(W)||_F^2 that the best rank-r start cancels."""
    expected = _energy_share(error, r)
    values = _torch.linalg.svdvals(error.detach().double())

    def find_problem(a):
        value = _q_number(a)
        slip = fraction_slip(value, expected, "that is the share that remains; the question asks for the share the "
                                              "rank-r start cancels.")
        if slip is not None:
            return slip or None
        if _math.isclose(value, (values[:r].sum() / values.sum()).item(), rel_tol=1e-3):
            return ("you summed the singular values; the squared Frobenius norm is the sum of their squares "
                    "(Eckart-Young, lesson 01).")
        if _math.isclose(value, 1 - _math.sqrt(1 - expected), rel_tol=1e-3):
            return "that is the drop of the norm itself; the question asks about the squared norm (the energy)."
        return f"share = (sum of the top {r} squared singular values of W - Q(W)) / (sum of all squared ones)."

    noise = _energy_share(_torch.randn(error.shape, generator=_torch.Generator().manual_seed(0)), r)
    return run_check(f"share of the quantization error a rank-{r} start cancels", answer, find_problem,
                     success=f"correct: {expected:.1%} at rank {r}; for a Gaussian random matrix of the same shape "
                             f"the top {r} directions hold {noise:.1%}.")


def _as_losses(value: Any):
    from ..compare import ExampleLosses

    if isinstance(value, ExampleLosses):
        return value
    sums, counts = value
    return ExampleLosses.of(sums, counts)


def check_base_format_experiment(prediction: Any, observed: Any, nf4: Any) -> Feedback:
    """Lesson 09, experiment: the yardstick of the FP4 + DQ base (no adapter) against the NF4 + DQ base.

    `observed` and `nf4` are the per-question answer losses (`ExampleLosses`)
    of the two bases on the same questions, before any training. The outcome is
    "lower" or "higher" when FP4's loss differs from NF4's by more than twice
    the standard error over the questions; otherwise no difference is detected,
    which is inconclusive: it refutes no prediction (not even "higher" or
    "lower"), and it does not show that the two cost the same.
    """
    from ..compare import loss_difference

    reference = _as_losses(nf4)
    said: dict[str, str] = {}

    def find_problem(answer):
        predicted, seen = answer
        predicted = _read_prediction(predicted)
        try:
            seen = _as_losses(seen)
        except Exception:
            return ("observed should be the per-question losses of the FP4 + DQ base: an ExampleLosses, e.g. "
                    'base_losses("fp4", True).')
        if seen.counts != reference.counts:
            return (f"your losses cover {len(seen.counts)} questions with {sum(seen.counts)} answer tokens; the "
                    f"NF4 base was scored on {len(reference.counts)} questions with {sum(reference.counts)}: "
                    "score both on the same yardstick questions.")
        if seen.sums == reference.sums:
            return 'these are the NF4 losses again: score the base loaded with quantization="fp4".'
        difference, error = loss_difference(reference, seen)
        outcome = "lower" if difference < -2 * error else "higher" if difference > 2 * error else "about the same"
        measured = (f"{reference.mean:.4f} NF4, {seen.mean:.4f} FP4, difference {difference:+.4f} ± "
                    f"{2 * error:.4f} (two standard errors)")
        if outcome == "about the same":  # not detected: inconclusive, so no prediction is refuted
            said["verdict"] = (f"inconclusive: no difference detected ({measured}). That neither confirms nor "
                               f"refutes your prediction ({predicted!r}): a difference smaller than this noise may "
                               "be there, and more questions would be needed to see it.")
            return None
        if predicted == outcome:
            said["verdict"] = f"correct: FP4's base loss is {outcome} ({measured})."
            return None
        if outcome == "higher":
            why = ("NF4 puts its 16 levels where normally distributed weights are dense, FP4 spends them on a "
                   "wider, sparser range, so FP4 rounds these weights further from their values")
        else:
            why = ("these weights are Q4_1 values (lesson 08): they sit on a uniform grid, not a normal "
                   "distribution, and here FP4's levels happen to land closer to them than NF4's; on Gaussian "
                   "weights NF4 wins, as the paper reports")
        return (f"your observation is right; the prediction was not: FP4's base loss is {outcome} "
                f"({measured}), beyond the noise. Why: {why}.")

    answer = None if is_placeholder(prediction) or is_placeholder(observed) else (prediction, observed)
    return run_check("experiment: FP4 instead of NF4 as the base", answer, find_problem,
                     success=lambda: said["verdict"])
