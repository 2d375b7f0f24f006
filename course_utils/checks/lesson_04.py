"""Self-checks of Lesson 04: LoRA with PEFT (the adapter file's size)."""

from __future__ import annotations

from typing import Any

from .core import Feedback, _as_count, _linear_shapes, run_check


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
