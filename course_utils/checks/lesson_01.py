"""Self-checks of Lesson 01: rank intuition (singular values, energy, rank-k approximation)."""

from __future__ import annotations

from typing import Any

import torch as _torch

from .core import NOT_ATTEMPTED, Feedback, _as_count, _as_number, _close, is_placeholder, run_check


def _singular_values(values: Any) -> _torch.Tensor:
    return _torch.as_tensor(values).detach().to(_torch.float64).cpu()


def check_rank_k_error(answer: Any, singular_values: Any, k: int) -> Feedback:
    """Frobenius error of the best rank-k approximation, from the singular values alone."""
    s = _singular_values(singular_values)
    expected = s[k:].square().sum().sqrt().item()

    def find_problem(a):
        value = _as_number(a)
        if _close(value, expected):
            return None
        if _close(value, expected**2):
            return "that is the squared error ||M - M_k||_F^2; take the square root."
        if _close(value, s[k:].sum().item()):
            return "you added the discarded singular values; add their squares, then take the square root."
        if _close(value, s[:k].square().sum().sqrt().item()):
            return "that is the norm of the part you keep (s[:k]); the error is made of the discarded values s[k:]."
        if _close(value, s[k + 1:].square().sum().sqrt().item()) or _close(value, s[k - 1:].square().sum().sqrt().item()):
            return "off by one: with 0-based indexing the top k values are s[:k], so the discarded ones are s[k:]."
        return f"{value:.6g} is not the error; Eckart-Young: ||M - M_k||_F = sqrt(sum of the discarded s_i^2)."

    return run_check("rank-k error", answer, find_problem,
                     success=f"correct: {expected:.6g}, without computing any approximation.")


def check_directions_for_energy(answer: Any, singular_values: Any, fraction: float = 0.9) -> Feedback:
    """Smallest k whose top-k singular directions hold at least `fraction` of the energy."""
    s = _singular_values(singular_values)
    energy = s.square().cumsum(0)
    expected = int((energy < fraction * energy[-1]).sum()) + 1
    plain = s.cumsum(0)
    from_values = int((plain < fraction * plain[-1]).sum()) + 1

    def find_problem(a):
        if isinstance(a, float) and not a.is_integer():
            return "the answer is a number of directions (an integer k), not a fraction."
        value = _as_count(a)
        if value == expected:
            return None
        if value == from_values:
            return "energy is the squared singular value (||M||_F^2 = sum s_i^2); you summed s_i themselves."
        if value == expected - 1:
            return f"one short: with {value} directions the energy is still below {fraction:.0%}. k counts directions (index + 1)."
        if value == expected + 1:
            return f"one too many: {value - 1} directions already hold {fraction:.0%}; find the smallest k."
        return f"{value} directions is not the smallest k holding {fraction:.0%} of sum s_i^2."

    return run_check(f"directions for {fraction:.0%} energy", answer, find_problem,
                     success=f"correct: {expected} of {len(s)} directions.")


def check_factorisation_params(answer: Any, d: int, n: int, k: int) -> Feedback:
    """Parameters of a rank-k factorisation B A of a d x n matrix (B: d x k, A: k x n)."""
    expected = k * (d + n)

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == d * n:
            return "that is the full d x n matrix; count the two factors instead."
        if value == expected + k:
            return "store the singular values inside one factor (A = diag(s) V^T), as LoRA's B A does: no separate k."
        if value == k * d * n:
            return "the factors are d x k and k x n: add their sizes, do not multiply everything."
        if value in (k * d, k * n):
            return "you counted one factor; B is d x k and A is k x n."
        return f"{value} is not the count; B is {d} x {k} and A is {k} x {n}."

    return run_check("factorisation parameters", answer, find_problem,
                     success=f"correct: {expected:,} instead of {d * n:,} ({expected / (d * n):.2%}).")


def check_break_even_rank(answer: Any, d: int, n: int) -> Feedback:
    """Largest k at which a rank-k factorisation has strictly fewer parameters than the d x n matrix."""
    expected = (d * n - 1) // (d + n)  # k (d + n) < d n

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value * (d + n) >= d * n:
            return f"at k={value} the factors hold {value * (d + n):,} parameters, not fewer than {d * n:,}."
        return f"k={value} is smaller than it needs to be: k={value + 1} still saves parameters."

    return run_check("break-even rank", answer, find_problem,
                     success=f"correct: up to k={expected}, just below d n / (d + n) = {d * n / (d + n):.1f}.")


# ---------------------------------------------------------------------------
# Experiment exercises: predict first, then observe. The helpers below are shared with
# the experiment checks of lessons 02, 03, 06 and 07.
# ---------------------------------------------------------------------------

def _choice(prediction: Any, options: dict[str, tuple[str, ...]]) -> str:
    """The option a written prediction names: `options` maps each option to the spellings accepted for it."""
    if not isinstance(prediction, str):
        raise ValueError(f"write the prediction as text, one of {', '.join(repr(o) for o in options)}.")
    said = " ".join(prediction.lower().replace("_", " ").split())
    for option, spellings in options.items():
        if said == option or said in spellings:
            return option
    raise ValueError(f"{prediction!r} is not one of {', '.join(repr(o) for o in options)}.")


def _predict_observe(exercise: str, prediction: Any, observed: Any, judge, success: str) -> Feedback:
    """Judge an experiment exercise: `judge(prediction, observed)` returns None or what is wrong.

    Not attempted while the prediction is still `...`; once it is written, a
    missing observation gets a reminder to run the experiment.
    """
    if is_placeholder(prediction):
        return run_check(exercise, prediction, judge)
    if is_placeholder(observed):
        feedback = Feedback(exercise, NOT_ATTEMPTED, f"prediction {prediction!r} noted; not attempted yet: now run "
                                                     "the experiment and put what you measure in `observed`.")
        print(feedback)
        return feedback
    return run_check(exercise, (prediction, observed), lambda pair: judge(*pair), success=success)


_MORE_FEWER_SAME = {"more": ("higher", "larger", "up", "increase", "increases"),
                    "fewer": ("less", "lower", "smaller", "down", "decrease", "decreases"),
                    "the same": ("same", "unchanged", "equal", "no change")}


def check_noise_experiment(prediction: Any, observed: Any, image: Any, noisy: Any, fraction: float = 0.9) -> Feedback:
    """Experiment: add Gaussian noise to a matrix; predict, then count the directions holding `fraction` of its energy."""
    clean = _torch.as_tensor(image).detach().to(_torch.float64).cpu()
    noisy = _torch.as_tensor(noisy).detach().to(_torch.float64).cpu()
    s_clean, s_noisy = _torch.linalg.svdvals(clean), _torch.linalg.svdvals(noisy)

    def count(s):
        energy = s.square().cumsum(0)
        return int((energy < fraction * energy[-1]).sum()) + 1

    k_clean, k_noisy = count(s_clean), count(s_noisy)
    truth = "more" if k_noisy > k_clean else "fewer" if k_noisy < k_clean else "the same"
    noise_share = (_torch.linalg.matrix_norm(noisy - clean) / _torch.linalg.matrix_norm(clean)).item()

    def judge(prediction, observed):
        if noise_share == 0:
            return "`noisy` equals the image: add the noise (the random_like term) before measuring."
        said = _choice(prediction, _MORE_FEWER_SAME)
        if isinstance(observed, float) and not observed.is_integer():
            return "the observation is a number of directions (an integer k), not a fraction of the energy."
        value = _as_count(observed)
        if value != k_noisy:
            if value == k_clean:
                return (f"{value} is the clean image's count; take the singular values of `noisy` "
                        "(torch.linalg.svdvals(noisy)) and count again.")
            plain = s_noisy.cumsum(0)
            if value == int((plain < fraction * plain[-1]).sum()) + 1:
                return "energy is the squared singular value; you summed the s_i themselves."
            return (f"{value} is not the smallest k whose top-k directions hold {fraction:.0%} of the noisy "
                    "image's energy: directions_for_energy(torch.linalg.svdvals(noisy), fraction).")
        if said != truth:
            return (f"you observed it yourself: {k_clean} directions for the clean image, {k_noisy} with the noise, "
                    f"so the answer is {truth!r}, not {said!r}. Why: Gaussian noise has no preferred directions "
                    "(the random matrix of section 2); its energy spreads evenly over all "
                    f"{min(clean.shape)} directions. It holds only about {noise_share ** 2:.0%} of the energy, but "
                    "almost all of that lands outside the top few directions, so their share of the total falls "
                    "and more directions are needed to reach the same share.")
        return None

    return _predict_observe(
        "noise experiment", prediction, observed, judge,
        success=f"correct: {k_clean} -> {k_noisy} directions for {fraction:.0%} of the energy. Noise is spread over "
                "every direction, so it makes a matrix look less low-rank.")
