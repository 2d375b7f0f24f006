"""Self-checks of Lesson 11: choosing and serving (largest batch, adapters vs merged copies, alpha, serving modes)."""

from __future__ import annotations

import math as _math
from typing import Any

from .core import Feedback, _as_count, _as_number, _close, is_placeholder, run_check


def _placeholder_pair(answer: Any) -> Any:
    """A pair whose parts are all still `...` counts as not attempted."""
    if isinstance(answer, (tuple, list)) and answer and all(is_placeholder(a) for a in answer):
        return ...
    return answer


def _plan_fits(model: Any, profile: Any, headroom: float, **settings: Any) -> bool:
    from ..memory import plan_memory

    return plan_memory(model, profile=profile, **settings).total <= headroom * profile.memory_gib * 1024**3


def largest_fitting_batch(model: Any, profile: Any, headroom: float = 0.9, limit: int = 4096, **settings: Any) -> int:
    """The largest micro-batch for which `plan_memory(model, batch=b, **settings)` fits (0: none).

    Memory grows with the batch, so a doubling search then a bisection finds it.
    """
    if not _plan_fits(model, profile, headroom, batch=1, **settings):
        return 0
    low, high = 1, 2
    while high <= limit and _plan_fits(model, profile, headroom, batch=high, **settings):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # low fits, high does not (or is past the limit)
        mid = (low + high) // 2
        if _plan_fits(model, profile, headroom, batch=mid, **settings):
            low = mid
        else:
            high = mid
    return low


def check_largest_batch(answer: Any, model: Any, profile: Any, headroom: float = 0.9, **settings: Any) -> Feedback:
    """Lesson 11: the largest micro-batch whose memory plan fits in `headroom` of the device."""
    expected = largest_fitting_batch(model, profile, headroom, **settings)
    full_memory = largest_fitting_batch(model, profile, 1.0, **settings)
    no_checkpointing = (largest_fitting_batch(model, profile, headroom, **(settings | {"gradient_checkpointing": False}))
                        if settings.get("gradient_checkpointing") else None)

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == expected + 1:
            return f"batch {value} is the first that does NOT fit; the answer is the last one that does."
        if value == full_memory and full_memory != expected:
            return f"that uses all {profile.memory_gib:.1f} GiB; leave the headroom ({headroom:.0%} usable)."
        if no_checkpointing is not None and value == no_checkpointing:
            return "that is the answer without gradient checkpointing; keep the settings the exercise gives."
        if value > expected:
            return f"batch {value} needs more than {headroom:.0%} of {profile.memory_gib:.1f} GiB; try smaller."
        return f"batch {value} fits, but a larger one does too; keep going up until the plan stops fitting."

    return run_check("largest batch that fits", answer, find_problem,
                     success=f"correct: micro-batch {expected} is the largest that fits.")


def check_adapters_vs_copies(answer: Any, model: Any, memory_gib: float, rank: int = 16, dtype: str = "bf16",
                             headroom: float = 0.9) -> Feedback:
    """Lesson 11: (merged copies, adapters next to one base) that fit in `headroom` x memory (weights only)."""
    from ..choose import serving_bytes

    sizes = serving_bytes(model, 1, rank=rank, dtype=dtype)
    usable = headroom * memory_gib * 1024**3
    copies = int(usable // sizes["base"])
    adapters = int((usable - sizes["base"]) // sizes["adapter"]) if usable >= sizes["base"] else 0

    answer = _placeholder_pair(answer)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (number of merged copies, number of adapters next to one base)."
        n_copies, n_adapters = _as_count(a[0]), _as_count(a[1])
        if n_copies != copies:
            if n_copies == int(memory_gib * 1024**3 // sizes["base"]):
                return "merged copies: count only the usable share of memory (the headroom)."
            return f"{n_copies} merged copies is not right: each copy is the whole model ({sizes['base'] / 1024**3:.2f} GiB)."
        if n_adapters != adapters:
            if n_adapters == int(usable // sizes["adapter"]):
                return "adapters: the base model takes its share first; the adapters share what is left."
            return (f"{n_adapters} adapters is not right: each adapter is {sizes['adapter'] / 1024**2:.1f} MiB "
                    "(r (d + k) fp32 values per targeted matrix).")
        return None

    return run_check("adapters vs merged copies", answer, find_problem,
                     success=f"correct: {copies} merged copies, or one base plus {adapters:,} adapters.")


def check_equivalent_alpha(answer: Any, r_old: int, alpha_old: float, r_new: int) -> Feedback:
    """Lesson 11: (alpha for plain LoRA, alpha with rsLoRA) at r_new giving the scale alpha_old / r_old had."""
    scale = alpha_old / r_old
    plain, rs = scale * r_new, scale * _math.sqrt(r_new)

    answer = _placeholder_pair(answer)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (lora_alpha for plain LoRA, lora_alpha with use_rslora=True)."
        a_plain, a_rs = _as_number(a[0]), _as_number(a[1])
        if not _close(a_plain, plain, 1e-3):
            if _close(a_plain, alpha_old):
                return "keeping lora_alpha fixed shrinks the scale alpha / r when r grows; scale alpha with r."
            return f"plain LoRA: the scale is lora_alpha / r; find lora_alpha with lora_alpha / {r_new} = {scale:g}."
        if not _close(a_rs, rs, 1e-3):
            if _close(a_rs, plain):
                return "with use_rslora=True PEFT divides by sqrt(r), not r."
            return f"rsLoRA: the scale is lora_alpha / sqrt(r); find lora_alpha with lora_alpha / sqrt({r_new}) = {scale:g}."
        return None

    return run_check("equivalent lora_alpha", answer, find_problem,
                     success=f"correct: lora_alpha={plain:g} (plain) or {rs:.4g} (rsLoRA) keeps the scale at {scale:g}.")


def check_serving_experiment(prediction: Any, observed: Any, requests: Any, modes: Any) -> Feedback:
    """Lesson 11, exercise 4: which serving mode answers one-adapter traffic fastest, predicted, then timed.

    `observed` is {mode: [seconds per repeat]} as `time_modes` returns it, for
    `requests` that all go to one adapter. The check looks at its inputs (every
    mode timed at least twice, the traffic really one task), finds the fastest
    mode against the timing's own noise (`course_utils.choose.fastest_modes`)
    and accepts a prediction among the modes tied for fastest.
    """
    from ..choose import fastest_modes

    modes = list(modes)
    answer = ... if is_placeholder(prediction) and is_placeholder(observed) else (prediction, observed)
    said: dict[str, str] = {}

    def find_problem(pair):
        guess, seconds = pair
        if is_placeholder(guess):
            return "write your prediction first (before you time anything): one of " + ", ".join(map(repr, modes)) + "."
        if guess not in modes:
            return f"{guess!r} is not a serving mode; choose one of " + ", ".join(map(repr, modes)) + "."
        if is_placeholder(seconds):
            return f"your prediction ({guess!r}) is written down; now time the modes and re-run."
        if isinstance(seconds, tuple) and len(seconds) == 2 and isinstance(seconds[0], dict):
            return "time_modes returns (seconds, answers); pass the seconds only: observed, _ = time_modes(...)."
        if not isinstance(seconds, dict) or sorted(seconds) != sorted(modes):
            return "pass the timings as time_modes returns them: {mode: [seconds, ...]} for every mode."
        tasks = {r["task"] for r in requests}
        if len(tasks) != 1:
            return f"the requests mix tasks ({sorted(tasks)}); the experiment is one adapter's traffic only."
        tied, noise = fastest_modes({mode: [float(t) for t in times] for mode, times in seconds.items()})
        best = {mode: min(times) for mode, times in seconds.items()}
        said["measured"] = (", ".join(f"{mode} {best[mode]:.2f} s" for mode in sorted(best, key=best.get))
                            + f"; timing noise {noise:.0%}")
        if guess in tied:
            return None
        return (f"you predicted {guess!r}, but {' and '.join(tied)} {'was' if len(tied) == 1 else 'were'} faster "
                f"({said['measured']}). With one adapter there is nothing to mix: every mode makes one generate call "
                "for all the requests, so the number of decoding loops is the same; what is left is the work per "
                "step. A merged copy runs plain linear layers; unmerged, every adapted layer adds two small matmuls "
                "(A, then B), and adapter_names adds a split of the batch by adapter in every layer.")

    return run_check("serving experiment", answer, find_problem, success=lambda: f"your prediction matches the timing: {said['measured']}.")
