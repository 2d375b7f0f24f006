"""Self-checks of lesson 04: placeholder, typical wrong answers, right answer.

The expectations are computed here from a small model with the Llama layer
names (three layers, narrower k/v like grouped-query attention), independently
of the check's own code.
"""

import pytest
from torch import nn

from course_utils import checks
from course_utils.checks import CORRECT, NOT_ATTEMPTED, WRONG
from course_utils.data import load_examples

HIDDEN, KV, INTER, LAYERS = 8, 4, 12, 3
SHAPES = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, KV), "v_proj": (HIDDEN, KV), "o_proj": (HIDDEN, HIDDEN),
          "gate_proj": (HIDDEN, INTER), "up_proj": (HIDDEN, INTER), "down_proj": (INTER, HIDDEN)}


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.Module()
        self.mlp = nn.Module()
        for name, (i, o) in SHAPES.items():
            setattr(self.self_attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else self.mlp, name,
                    nn.Linear(i, o, bias=False))


class TinyLlamaLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])
        self.lm_head = nn.Linear(HIDDEN, 20, bias=False)


MODEL = TinyLlamaLike()


def budget(targets, r):
    return LAYERS * sum(r * sum(SHAPES[t]) for t in targets)


def test_adapter_payload_bytes():
    targets, r = ["q_proj", "v_proj"], 3
    params = budget(targets, r)  # 3 layers x 3 x (16 + 12) = 252
    right = 4 * params
    assert checks.check_adapter_payload_bytes(..., MODEL, targets, r).status == NOT_ATTEMPTED
    assert checks.check_adapter_payload_bytes(right, MODEL, targets, r).correct
    for wrong, hint in [(params, "number of parameters"), (8 * right, "bits"), (right // 2, "fp16"),
                        (right // LAYERS, "one decoder layer"), (4 * r * 2 * HIDDEN * 2 * LAYERS, "square"),
                        (4 * LAYERS * r * (HIDDEN + HIDDEN), "one factor"), (right + 1, "is not")]:
        feedback = checks.check_adapter_payload_bytes(wrong, MODEL, targets, r)
        assert feedback.status == WRONG and hint in feedback.message, (wrong, feedback.message)
    assert checks.check_adapter_payload_bytes("many", MODEL, targets, r).status == WRONG
    with pytest.raises(ValueError, match="module names"):
        checks.check_adapter_payload_bytes(right, MODEL, ["qproj"], r)


def test_equal_budget_rank():
    target = budget(SHAPES, 2)  # 3 layers x 2 x 116 = 696
    per_rank = budget(["q_proj", "k_proj", "v_proj", "o_proj"], 1)  # 3 x 56 = 168
    expected = min(range(1, 20), key=lambda r: abs(r * per_rank - target))  # 4 (672)
    assert checks.check_equal_budget_rank(..., MODEL, 2).status == NOT_ATTEMPTED
    assert checks.check_equal_budget_rank(expected, MODEL, 2).correct
    assert "fewer matrices" in checks.check_equal_budget_rank(2, MODEL, 2).message
    for wrong in (expected - 1, expected + 1, 0):
        assert checks.check_equal_budget_rank(wrong, MODEL, 2).status == WRONG
    assert checks.check_equal_budget_rank(4.5, MODEL, 2).status == WRONG


def test_adapter_router():
    def good(text):
        return "sql" if text in sql_questions else "json"

    sql_questions = {e["question"] for e in load_examples("sql", "test")}
    assert checks.check_adapter_router(...).status == NOT_ATTEMPTED
    assert checks.check_adapter_router(good).correct
    assert "function itself" in checks.check_adapter_router(good("x")).message
    assert "every request" in checks.check_adapter_router(lambda text: "sql").message
    assert "named" in checks.check_adapter_router(lambda text: "SQL" if text in sql_questions else "JSON").message
    flipped = checks.check_adapter_router(lambda text: "json" if text in sql_questions else "sql")
    assert flipped.status == WRONG and "routed correctly" in flipped.message
    crashing = checks.check_adapter_router(lambda text: text.missing)
    assert crashing.status == WRONG and "could not check" in crashing.message


def test_lesson_04_router_solution_rule():
    """The worked solution's keyword rule (a booking sentence names a day) must pass the check."""
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    assert checks.check_adapter_router(lambda text: "json" if any(d in text for d in days) else "sql",
                                       ).status == CORRECT
