"""Self-checks of Lesson 02: the SVD of a real weight update (random baseline, shared rank, adapter size)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _as_count, run_check


def _energy_directions(singular_values: Any, fraction: float) -> int:
    """Smallest k whose top-k squared singular values hold >= fraction of their sum."""
    s = _torch.as_tensor(singular_values).detach().to(_torch.float64).cpu()
    energy = s.square().cumsum(0)
    return int((energy < fraction * energy[-1]).sum()) + 1


def check_random_baseline(answer: Any, matrix: Any) -> Feedback:
    """A Gaussian matrix with the shape and Frobenius norm of `matrix` (its no-structure twin)."""
    target = _torch.as_tensor(matrix).detach().to(_torch.float64).cpu()
    target_norm = _torch.linalg.matrix_norm(target).item()
    generator = _torch.Generator().manual_seed(12345)
    noise = _torch.randn(target.shape, generator=generator, dtype=_torch.float64)
    reference_dirs = _energy_directions(_torch.linalg.svdvals(noise), 0.9)

    def find_problem(a):
        if not _torch.is_tensor(a):
            return f"expected a torch tensor, got {type(a).__name__}."
        value = a.detach().to(_torch.float64).cpu()
        if tuple(value.shape) != tuple(target.shape):
            if tuple(value.shape) == tuple(target.shape[::-1]):
                return f"shape {tuple(value.shape)} is transposed; use delta.shape = {tuple(target.shape)}."
            return f"shape {tuple(value.shape)}, expected {tuple(target.shape)} (delta.shape)."
        norm = _torch.linalg.matrix_norm(value).item()
        if _torch.allclose(value, target):
            return "that is ΔW itself; the baseline must be random noise with ΔW's norm."
        flat_a, flat_t = value.reshape(-1), target.reshape(-1)
        cosine = (flat_a @ flat_t).abs().item() / max(norm * target_norm, 1e-300)
        if cosine > 0.99:
            return "that is a scaled copy of ΔW: it keeps ΔW's structure; draw fresh Gaussian noise instead."
        if not _math.isclose(norm, target_norm, rel_tol=1e-4):
            if _math.isclose(norm, _math.sqrt(value.numel()), rel_tol=0.05):
                return (f"its Frobenius norm is {norm:.4g} (plain randn), but ΔW's is {target_norm:.4g}: "
                        "multiply the noise by ||ΔW||_F / ||noise||_F.")
            spectral = _torch.linalg.matrix_norm(target, ord=2).item()
            if _math.isclose(_torch.linalg.matrix_norm(value, ord=2).item(), spectral, rel_tol=1e-4):
                return "you matched the largest singular value (spectral norm); match the Frobenius norm instead."
            return (f"its Frobenius norm is {norm:.4g}, ΔW's is {target_norm:.4g}: scale by "
                    "torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(noise).")
        dirs = _energy_directions(_torch.linalg.svdvals(value), 0.9)
        if dirs < 0.5 * reference_dirs:
            return (f"90% of its energy sits in {dirs} directions, a Gaussian matrix of this shape needs about "
                    f"{reference_dirs}: this is not unstructured noise. Use torch.randn(delta.shape, generator=gen).")
        return None

    return run_check("random baseline", answer, find_problem,
                     success=f"correct: same shape, Frobenius norm {target_norm:.4g}, energy spread like noise.")


def _spectra_list(spectra: Any) -> list[_torch.Tensor]:
    values = spectra.values() if isinstance(spectra, dict) else spectra
    values = [_torch.as_tensor(s).detach().to(_torch.float64).cpu() for s in values]
    if not values:
        raise ValueError("pass the singular values of at least one matrix (a dict name -> tensor, or a list).")
    return values


def check_shared_rank(answer: Any, spectra: Any, fraction: float = 0.8) -> Feedback:
    """Smallest single rank r at which every matrix's top-r directions hold >= `fraction` of its energy."""
    values = _spectra_list(spectra)
    needed = sorted(_energy_directions(s, fraction) for s in values)
    expected = needed[-1]
    median = needed[(len(needed) - 1) // 2], needed[len(needed) // 2]
    from_values = max(int((s.cumsum(0) < fraction * s.sum()).sum()) + 1 for s in values)
    at_90 = max(_energy_directions(s, 0.9) for s in values) if fraction != 0.9 else None

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value in median and value < expected:
            return (f"{value} is about the median matrix's need; with one shared r the matrix that needs the most "
                    f"directions decides, or it keeps less than {fraction:.0%}.")
        if value == needed[0]:
            return "that is the least any matrix needs; the shared r must satisfy every matrix, so take the largest."
        if value == expected - 1:
            return f"one short: at r={value} some matrix still keeps less than {fraction:.0%}. k counts directions (index + 1)."
        if value == from_values:
            return "energy is the squared singular value (||ΔW||_F^2 = sum s_i^2); you summed s_i themselves."
        if at_90 is not None and value == at_90:
            return f"that is the rank for 90% of the energy; the question asks for {fraction:.0%}."
        if value > expected:
            return f"r={value} works but is not the smallest: r={expected - 1} or less may already do. Check each matrix."
        return f"at r={value} some matrices keep less than {fraction:.0%} of their energy."

    return run_check(f"shared rank for {fraction:.0%}", answer, find_problem,
                     success=f"correct: r={expected} (the median matrix would need only {needed[len(needed) // 2]}).")


def check_adapter_params(answer: Any, shapes: Any, r: int) -> Feedback:
    """Trainable parameters of a rank-r LoRA adapter on matrices of the given (d, k) shapes: sum r (d + k)."""
    shapes = [tuple(int(n) for n in shape) for shape in shapes]
    if not shapes or any(len(shape) != 2 for shape in shapes):
        raise ValueError("shapes must be a non-empty list of (out_features, in_features) pairs.")
    expected = sum(r * (d + k) for d, k in shapes)
    full = sum(d * k for d, k in shapes)
    widest = max(shapes, key=lambda s: s[0] + s[1])

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == full:
            return "that is the number of weights in the full matrices; LoRA trains B (d x r) and A (r x k) instead."
        if value == len(shapes) * r * (widest[0] + widest[1]):
            return f"not every target is {widest[0]} x {widest[1]}: v_proj is narrower; use each matrix's own shape."
        if value in {r * (d + k) for d, k in shapes}:
            return f"that is one matrix; add r (d + k) over all {len(shapes)} target matrices."
        if value == expected // 2 or value in (sum(r * d for d, _ in shapes), sum(r * k for _, k in shapes)):
            return "you counted one of the two factors; each matrix gets B (d x r) and A (r x k)."
        return f"{value:,} is not sum r (d + k) over the {len(shapes)} target matrices."

    return run_check("adapter parameters", answer, find_problem,
                     success=f"correct: {expected:,} trainable numbers vs {full:,} in the full matrices "
                             f"({expected / full:.1%}).")


_HIGHER_LOWER_SAME = {"higher": ("more", "larger", "worse", "up", "increase", "increases"),
                      "lower": ("less", "smaller", "better", "down", "decrease", "decreases"),
                      "the same": ("same", "unchanged", "equal", "no change", "no difference")}


def check_truncation_experiment(prediction: Any, observed: Any, seed_settings: Any, rank: int = 1,
                                reference_rank: int = 8, profile=None) -> Feedback:
    """Experiment: keep rank `rank` of every ΔW instead of `reference_rank`; predict, then measure the yardstick.

    `seed_settings` lists the full fine-tune's settings, one per seed. `prediction`
    says how the held-out answer loss at rank `rank` compares with the loss at
    `reference_rank` ("higher", "lower" or "the same": no difference detected
    by `compare_runs` over the seeds); `observed` lists the measured answer loss
    at rank `rank` per seed (`full_finetune_example_losses(s, rank=rank).mean`).
    Both are judged on the cached per-question losses: re-checking costs nothing.
    """
    from ..compare import compare_runs
    from ..linalg import energy_fraction
    from ..full_finetune import full_finetune_dir, full_finetune_example_losses, read_delta_w
    from .lesson_01 import _choice, _predict_observe

    seed_settings = list(seed_settings)

    def judge(prediction, observed):
        values = [float(o.mean if hasattr(o, "mean") else o) for o in observed]
        losses = {k: [full_finetune_example_losses(s, rank=k, profile=profile) for s in seed_settings]
                  for k in (rank, reference_rank, None)}
        losses[0] = [full_finetune_example_losses(seed_settings[0], rank=0, profile=profile)] * len(seed_settings)
        if len(values) != len(seed_settings):
            return f"observe one answer loss per seed: a list of {len(seed_settings)} numbers, got {len(values)}."

        def matches(k):
            return all(_math.isclose(v, run.mean, rel_tol=1e-4) for v, run in zip(values, losses[k]))

        if not matches(rank):
            for k, what in ((reference_rank, f"rank {reference_rank}'s losses"), (None, "the full ΔW's losses"),
                            (0, "the base model's loss (rank=0)")):
                if matches(k):
                    return f"those are {what}; measure full_finetune_example_losses(s, rank={rank}).mean per seed."
            return (f"{values} are not the measured answer losses at rank {rank}: use "
                    f"full_finetune_example_losses(s, rank={rank}, profile=profile).mean for each seed's settings s.")
        said = _choice(prediction, _HIGHER_LOWER_SAME)
        comparison = compare_runs(f"rank {reference_rank}", losses[reference_rank], f"rank {rank}", losses[rank])
        truth = ("the same" if not comparison.detected
                 else "higher" if comparison.winner == f"rank {reference_rank}" else "lower")
        if said == truth:
            return None
        spectra = [_torch.linalg.svdvals(d.to(_torch.float64))
                   for d in read_delta_w(full_finetune_dir(seed_settings[0])).values()]

        def median_energy(k):
            kept = sorted(energy_fraction(s)[min(k, len(s)) - 1].item() for s in spectra)
            return kept[len(kept) // 2]

        def share(k):
            gains = [(b.mean - t.mean, b.mean - f.mean) for b, t, f in zip(losses[0], losses[k], losses[None])]
            return sum(g for g, _ in gains) / sum(full for _, full in gains)

        why = (f"Rank {rank} keeps {median_energy(rank):.0%} of a ΔW's energy (median of the {len(spectra)} matrices), "
               f"rank {reference_rank} {median_energy(reference_rank):.0%}; of the improvement the full ΔW brings "
               f"over the base model, rank {rank} keeps {share(rank):.0%} and rank {reference_rank} "
               f"{share(reference_rank):.0%}. {comparison.sentence()}.")
        if truth == "the same":
            return (f"you predicted {said}, but no difference is detected: what the directions past the first "
                    f"{rank} do on these questions does not show above the noise. {why}")
        return f"you predicted {said}; the measured loss at rank {rank} is {truth}. {why}"

    return _predict_observe(
        "truncation experiment", prediction, observed, judge,
        success=f"correct: your prediction matches what the yardstick measured at rank {rank} against rank "
                f"{reference_rank}, over {len(seed_settings)} seeds.")
