"""Self-checks of Lesson 04: LoRA with PEFT (adapter file size, equal budgets, adapter routing)."""

from __future__ import annotations

from typing import Any

from .core import Feedback, _as_count, _linear_shapes, run_check


_ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_ALL_LINEAR_TARGETS = _ATTENTION_TARGETS + ("gate_proj", "up_proj", "down_proj")


def _lora_budget(model: Any, target_modules: Any, r: int) -> int:
    return sum(r * (i + o) for _, i, o in _linear_shapes(model, target_modules))


def check_adapter_payload_bytes(answer: Any, model: Any, target_modules: Any, r: int,
                                bytes_per_param: int = 4) -> Feedback:
    """Bytes of tensor data in an adapter file: bytes_per_param x r (in + out) per adapted matrix."""
    shapes = _linear_shapes(model, target_modules)
    if not shapes:
        raise ValueError(f"no nn.Linear in the model matches {list(target_modules)}; check the module names.")
    params = sum(r * (i + o) for _, i, o in shapes)
    expected = bytes_per_param * params
    widest = max(max(i, o) for _, i, o in shapes)
    n_layers = len({name.rsplit(".", 2)[0] for name, _, _ in shapes})

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == params:
            return f"that is the number of parameters; each fp32 parameter takes {bytes_per_param} bytes."
        if value == 8 * expected:
            return "that is the number of bits; divide by 8 for bytes."
        if value == expected // 2:
            return "that would be fp16/bf16 (2 bytes per parameter); the adapter here is saved in fp32 (4 bytes)."
        if n_layers > 1 and value * n_layers == expected:
            return f"that is one decoder layer; the targets appear in all {n_layers} layers."
        if value == bytes_per_param * r * 2 * widest * len(shapes):
            return "not every target is square: v_proj maps 576 -> 192 here, so it has r (576 + 192) parameters."
        if value == bytes_per_param * sum(r * i for _, i, _ in shapes) or \
                value == bytes_per_param * sum(r * o for _, _, o in shapes):
            return "you counted one factor; the file holds lora_A (r x in) and lora_B (out x r) of every target."
        return f"{value:,} bytes is not {bytes_per_param} x r (in + out) summed over the {len(shapes)} adapted matrices."

    return run_check("adapter tensor bytes", answer, find_problem,
                     success=f"correct: {expected:,} bytes ({params:,} parameters x {bytes_per_param}).")


def check_equal_budget_rank(answer: Any, model: Any, all_linear_rank: int) -> Feedback:
    """The attention-only rank whose budget is closest to that of all-linear at `all_linear_rank`."""
    target = _lora_budget(model, _ALL_LINEAR_TARGETS, all_linear_rank)
    per_rank = _lora_budget(model, _ATTENTION_TARGETS, 1)
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


def check_adapter_router(answer: Any, min_accuracy: float = 0.95) -> Feedback:
    """A function request -> adapter name ("sql" or "json"), run on the test questions of both tasks."""
    from ..data import load_examples

    requests = [(e["question"], task) for task in ("sql", "json") for e in load_examples(task, "test")]

    def find_problem(route):
        if not callable(route):
            return "pass the function itself (answer = route), not its result."
        names = [route(text) for text, _ in requests]
        unknown = sorted({repr(n) for n in names if n not in ("sql", "json")})
        if unknown:
            return f"route returned {', '.join(unknown[:3])}; the adapters are named 'sql' and 'json'."
        if len(set(names)) == 1:
            return f"route sends every request to {names[0]!r}; the other adapter never gets used."
        right = sum(n == task for n, (_, task) in zip(names, requests))
        wrong = [text for n, (text, task) in zip(names, requests) if n != task]
        if right / len(requests) < min_accuracy:
            return (f"{right}/{len(requests)} routed correctly (need {min_accuracy:.0%}); "
                    f"e.g. misrouted: {wrong[0]!r}.")
        return None

    return run_check("adapter router", answer, find_problem,
                     success=f"correct: your router picks the right adapter for the test requests.")
