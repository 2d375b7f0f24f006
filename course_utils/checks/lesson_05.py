"""Self-checks of Lesson 05: LoRA experiments (equal budgets, the rsLoRA experiment)."""

from __future__ import annotations

from typing import Any

from ..adapters import TARGET_SETS
from ..lora import lora_budget
from .core import Feedback, _as_count, is_placeholder, run_check


def check_equal_budget_rank(answer: Any, model: Any, all_linear_rank: int) -> Feedback:
    """The attention-only rank whose budget is closest to that of all-linear at `all_linear_rank`."""
    target = lora_budget(model, TARGET_SETS["all-linear"], all_linear_rank)
    per_rank = lora_budget(model, TARGET_SETS["attention"], 1)
    if per_rank == 0:
        raise ValueError("the model has no q_proj/k_proj/v_proj/o_proj layers; pass a Llama-style model.")
    expected = min(range(1, 4 * target // per_rank + 2), key=lambda r: abs(r * per_rank - target))

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == all_linear_rank:
            return ("the same rank on fewer matrices is a smaller budget; raise the attention rank until "
                    "r x (sum of in + out over q, k, v, o) matches the all-linear budget.")
        if value <= 0:
            return "a rank is a positive integer."
        return (f"attention-only r={value} has {value * per_rank:,} parameters, all-linear r={all_linear_rank} has "
                f"{target:,}; another rank is closer (compare r x {per_rank:,} with {target:,}).")

    return run_check("equal-budget rank", answer, find_problem,
                     success=f"correct: r={expected} gives {expected * per_rank:,} vs {target:,} parameters.")


PREDICTIONS = ("lower", "higher", "no difference")


def read_prediction(answer: Any) -> str:
    """A learner's prediction of a comparison's outcome: "lower", "higher" or "no difference"."""
    if not isinstance(answer, str):
        raise ValueError(f"write the prediction as text, one of {PREDICTIONS}, e.g. prediction = \"lower\"")
    text = " ".join(answer.lower().replace("_", " ").split())
    aliases = {"same": "no difference", "equal": "no difference", "none": "no difference", "no change": "no difference",
               "better": "lower", "worse": "higher"}
    text = aliases.get(text, text)
    if text not in PREDICTIONS:
        raise ValueError(f"the prediction {answer!r} is not one of {PREDICTIONS}")
    return text


def outcome(difference: float, standard_error: float) -> str:
    """What a paired difference (B - A of the answer loss) says: B "lower", "higher", or "no difference"."""
    if difference < -2 * standard_error:
        return "lower"
    if difference > 2 * standard_error:
        return "higher"
    return "no difference"


def check_rslora_experiment(prediction: Any, observed: Any, plain: Any, r: int, lora_alpha: float = 16,
                            profile: Any = None) -> Feedback:
    """Lesson 05, exercise 2: rsLoRA vs plain LoRA at rank `r` (seed 0), predicted, then observed.

    `observed` must be the yardstick (`ExampleLosses`) of
    `experiment_settings(profile, r=r, use_rslora=True)`; the check recomputes it
    from the cache. `plain` is plain LoRA's yardstick at the same rank and seed.
    The prediction is judged against what was observed, and a wrong one gets
    the mechanism: the scale of B A under each rule.
    """
    from ..compare import ExampleLosses, loss_difference
    from ..lora import lora_scaling
    from ..adapters import adapter_example_losses, experiment_settings

    scale_plain, scale_rs = lora_scaling(r, lora_alpha), lora_scaling(r, lora_alpha, use_rslora=True)
    mechanism = (f"At r={r} with lora_alpha={lora_alpha:g}, plain LoRA multiplies B A by {lora_alpha:g}/{r} = "
                 f"{scale_plain:.3g}, rsLoRA by {lora_alpha:g}/sqrt({r}) = {scale_rs:.3g}, {scale_rs / scale_plain:.2g}x "
                 "more. Adam moves B by about the learning rate per step whatever that scale (lesson 03), so "
                 "rsLoRA's update grows that much faster from the same start")
    answer = ... if is_placeholder(prediction) and is_placeholder(observed) else (prediction, observed)
    said: dict[str, str] = {}

    def find_problem(pair):
        if is_placeholder(pair[0]):
            return "write your prediction first (before you look at the observation): \"lower\", \"higher\" or \"no difference\"."
        guess = read_prediction(pair[0])
        if is_placeholder(pair[1]):
            return f"your prediction ({guess!r}) is written down; now compute `observed` and re-run."
        expected = adapter_example_losses(experiment_settings(profile, r=r, use_rslora=True), profile=profile)
        value = pair[1]
        if isinstance(value, ExampleLosses):
            if value == plain:
                return "that is plain LoRA's yardstick; train the adapter with use_rslora=True."
            if value != expected:
                return (f"this yardstick ({value.mean:.4f}) is not that of experiment_settings(profile, r={r}, "
                        f"use_rslora=True) with seed 0 ({expected.mean:.4f}): check the settings.")
        elif abs(float(value) - expected.mean) > 1e-6:
            return (f"{float(value):.4f} is not the answer loss of the rsLoRA adapter at r={r} "
                    f"({expected.mean:.4f}); pass adapter_example_losses(...) itself.")
        difference, se = loss_difference(plain, expected)
        seen = outcome(difference, se)
        said["measured"] = (f"rsLoRA {expected.mean:.3f} vs plain {plain.mean:.3f}, difference {difference:+.3f} "
                            f"± {2 * se:.3f} (two standard errors)")
        if seen == "no difference":  # not detected: inconclusive, so no prediction is refuted
            said["verdict"] = (f"inconclusive: {said['measured']}, no difference detected. That neither confirms "
                               f"nor refutes your prediction ({guess!r}): a difference smaller than this noise may be "
                               f"there. {mechanism}; in this run the yardstick did not move beyond its noise.")
            return None
        if guess == seen:
            said["verdict"] = f"your prediction matches the observation: {said['measured']}, so {seen!r}."
            return None
        if seen == "lower":
            why = (" In 12 steps plain LoRA at a high rank barely moves; rsLoRA gives it back a step size like "
                   "r=8's (scale 2), so it learns more in the same steps.")
        else:
            why = " Here the larger update overshoots, as too high a learning rate does."
        return (f"you predicted {guess!r}; observed: {said['measured']}, so {seen!r}. {mechanism}.{why} "
                "(One seed: section 1's seed spread bounds what it can show.)")

    return run_check("rsLoRA experiment", answer, find_problem, success=lambda: said["verdict"])
