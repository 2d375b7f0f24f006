"""Self-checks of Lesson 10: capstone (making a plan fit, optimizer steps, adapter size of a 7B)."""

from __future__ import annotations

from typing import Any

from .core import Feedback, _as_count, is_placeholder, run_check


def check_fitting_change(answer: Any, plan: Any, profile: Any, options: dict) -> Feedback:
    """Which single change in `options` (letter -> plan.replan kwargs) makes `plan` fit `profile`'s GPU."""
    from ..hardware import GIB as _GIB

    available = profile.memory_gib * _GIB
    totals = {letter: plan.replan(**change).total for letter, change in options.items()}
    fitting = sorted(letter for letter, total in totals.items() if total <= available)

    def find_problem(a):
        letter = str(a).strip().lower()
        if letter not in options:
            return f"answer with one of the letters {sorted(options)}, e.g. answer = 'a'."
        if letter in fitting:
            return None
        saved = (plan.total - totals[letter]) / _GIB
        return (f"{options[letter]} saves only {saved:.2f} GiB: the plan still needs "
                f"{totals[letter] / _GIB:.2f} GiB of {available / _GIB:.2f}. Look at the largest parts of the plan "
                "(activations grow with batch x seq_len) and which change shrinks them.")

    best = fitting[0] if fitting else None
    success = (f"correct: {options[best]} brings it to {totals[best] / _GIB:.2f} GiB; activations scale with "
               "batch x seq_len, rank and optimizer barely matter next to them." if best else "correct.")
    return run_check("a change that fits", answer, find_problem, success=success)


def check_optimizer_steps(answer: Any, n_examples: int, batch_size: int, grad_accum: int, epochs: int) -> Feedback:
    """Optimizer steps for `epochs` passes over `n_examples` (incomplete micro-batches dropped)."""
    micro_per_epoch = n_examples // batch_size
    expected = epochs * micro_per_epoch // grad_accum

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == epochs * micro_per_epoch:
            return "that counts micro-batches; the optimizer steps once every grad_accum micro-batches."
        if value == micro_per_epoch // grad_accum:
            return "that is one epoch; multiply by the number of epochs."
        if value == epochs * n_examples:
            return "that is the number of examples seen; divide by the effective batch (batch_size x grad_accum)."
        if value == epochs * n_examples * grad_accum // batch_size:
            return "gradient accumulation makes the effective batch larger, so there are fewer steps: divide by it."
        return (f"{value} is not it: one optimizer step consumes batch_size x grad_accum = "
                f"{batch_size * grad_accum} examples.")

    return run_check("optimizer steps", answer, find_problem,
                     success=f"correct: {expected} steps of {batch_size * grad_accum} examples each.")


def _lora_params_from_config(config: Any, rank: int, suffixes: tuple[str, ...]) -> int:
    h, i = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    shapes = {"q_proj": (h, heads * head_dim), "k_proj": (h, kv * head_dim), "v_proj": (h, kv * head_dim),
              "o_proj": (heads * head_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(rank * (shapes[s][0] + shapes[s][1]) for s in suffixes)
    return config.num_hidden_layers * per_layer


def check_config_adapter_params(answer: Any, config: Any, rank: int = 16) -> Feedback:
    """LoRA parameters for `rank` on all seven linear layers of every decoder layer of `config`."""
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    expected = _lora_params_from_config(config, rank, every)
    layers = config.num_hidden_layers

    class _NoGQA:  # the same config as if k and v had as many heads as q
        def __init__(self, c):
            self.__dict__.update(c.to_dict() if hasattr(c, "to_dict") else vars(c))
            self.num_key_value_heads = self.num_attention_heads

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == _lora_params_from_config(_NoGQA(config), rank, every):
            return ("k_proj and v_proj are smaller than q_proj: with grouped-query attention their output is "
                    "num_key_value_heads x head_dim, not hidden_size.")
        if value == _lora_params_from_config(config, rank, every[:4]):
            return "that is the attention projections only; all-linear also wraps gate, up and down."
        if value == expected // layers:
            return f"that is one decoder layer; the model has {layers}."
        if value == 4 * expected:
            return "that is the size in bytes (fp32); the question asks for the number of parameters."
        if value == 2 * expected:
            return "twice too many: A (r x k) and B (d x r) together hold r (d + k) per matrix; count them once."
        return f"{value:,} is not it; per wrapped matrix count r (d + k), then sum over 7 matrices and {layers} layers."

    return run_check("adapter parameters", answer, find_problem,
                     success=f"correct: {expected:,} parameters, {4 * expected / 2**20:.0f} MiB in fp32.")


def check_learning_rate_experiment(prediction: Any, observed: Any, reference: Any, new_rate: float) -> Feedback:
    """Lesson 10, experiment: the resume demo's run again at `new_rate`: is its late loss lower or higher?

    `observed` and `reference` are TrainResults of the same demo run (same batches, same start) at the new
    and the original learning rate; the late loss is the mean of the last two steps.
    """
    def late(result: Any) -> float:
        return sum(result.losses[-2:]) / 2

    def find_problem(pair):
        guess, run = pair
        if is_placeholder(run) or not hasattr(run, "losses"):
            return "set `observed` to the TrainResult that train_with_trainer returns for the run at the new rate."
        if len(run.losses) != len(reference.losses):
            return (f"the run has {len(run.losses)} steps, the demo {len(reference.losses)}: train the same "
                    "demo_config with only the learning rate changed.")
        if run.losses == reference.losses:
            return "these are the demo's own losses: did you change the learning rate (replace(demo_config, ...))?"
        if run.losses[0] != reference.losses[0]:
            return ("the first step's loss differs from the demo's, so the run did not start where the demo did: "
                    "call fresh_start() (or rebuild the model with torch.manual_seed(0)) before training.")
        actual = "lower" if late(run) < late(reference) else "higher"
        if str(guess).strip().lower() not in ("lower", "higher"):
            return 'predict "lower" or "higher".'
        if str(guess).strip().lower() != actual:
            return (f"you predicted {guess!r}, but the late loss went from {late(reference):.3f} (demo) to "
                    f"{late(run):.3f}: {actual}. " + (
                        "A larger step moves faster down a smooth slope: on this easy start the adapter simply "
                        "learns more per step." if actual == "lower" else
                        "Adam moves every weight by about the learning rate per step, so 10x the rate is 10x "
                        "the step: the updates overshoot and the loss stops falling (or rises)."))
        return None

    answer = ... if is_placeholder(prediction) else (prediction, observed)
    success = "correct."
    if hasattr(observed, "losses") and observed.losses:
        success = (f"correct: at learning rate {new_rate:g} the late loss is "
                   f"{'lower' if late(observed) < late(reference) else 'higher'} than the demo's "
                   f"({late(observed):.3f} vs {late(reference):.3f}).")
    return run_check("learning-rate experiment", answer, find_problem, success=success)
