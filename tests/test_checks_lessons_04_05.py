"""Self-checks of lessons 04 and 05: placeholder, typical wrong answers, right answer.

The expectations are computed here from a small model with the Llama layer
names (three layers, narrower k/v like grouped-query attention), independently
of the check's own code.
"""

import pytest
from torch import nn

import course_utils.adapters as adapters_module

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG
from course_utils.compare import ExampleLosses

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


# The rsLoRA experiment (lesson 05, exercise 2): the check recomputes the observation from the cache; here the cache is faked.
COUNTS = (10,) * 20
PLAIN = ExampleLosses.of([5.0 + (i % 3) for i in range(20)], COUNTS)  # mean 0.595
MUCH_LOWER = ExampleLosses.of([3.0 + (i % 3) for i in range(20)], COUNTS)  # every question 0.2 lower
NOISY_SAME = ExampleLosses.of([5.0 + (i % 3) + (0.5 if i % 2 else -0.5) for i in range(20)], COUNTS)


@pytest.fixture
def rslora_run(monkeypatch):
    """Make the check find `result` as the cached rsLoRA yardstick, and record what it asked for."""
    asked = {}

    def fake_settings(profile=None, task="sql", **changes):
        asked.update(changes)
        return changes

    def use(result):
        monkeypatch.setattr(adapters_module, "experiment_settings", fake_settings)
        monkeypatch.setattr(adapters_module, "adapter_example_losses", lambda settings, profile=None: result)
        return asked

    return use


def check(prediction, observed, r=32):
    return checks.check_rslora_experiment(prediction, observed, plain=PLAIN, r=r)


def test_rslora_experiment_placeholders(rslora_run):
    rslora_run(MUCH_LOWER)
    assert check(..., ...).status == NOT_ATTEMPTED
    assert "now compute" in check("lower", ...).message
    assert "prediction first" in check(..., MUCH_LOWER).message
    assert check("faster", MUCH_LOWER).status == WRONG
    assert check(0.3, MUCH_LOWER).status == WRONG


def test_rslora_experiment_judges_the_prediction_by_the_observation(rslora_run):
    asked = rslora_run(MUCH_LOWER)
    assert check("lower", MUCH_LOWER).correct
    assert asked == {"r": 32, "use_rslora": True}  # the observation it recomputed: rsLoRA at the exercise's rank
    assert check(" Lower ", MUCH_LOWER.mean).correct  # the mean alone is accepted too
    wrong = check("higher", MUCH_LOWER)
    assert wrong.status == WRONG and "16/32 = 0.5" in wrong.message and "16/sqrt(32) = 2.83" in wrong.message
    assert "'lower'" in wrong.message and "learns more" in wrong.message
    assert check("no difference", MUCH_LOWER).status == WRONG


def test_rslora_experiment_not_detected_is_inconclusive_for_every_prediction(rslora_run):
    rslora_run(NOISY_SAME)
    for prediction in ("no difference", "lower", "higher"):  # none is refuted, none confirmed
        said = check(prediction, NOISY_SAME)
        assert said.status != WRONG and said.message.startswith("inconclusive: ")
        assert f"refutes your prediction ('{prediction}')" in said.message and "did not move beyond its noise" in said.message


def test_rslora_experiment_checks_the_observation(rslora_run):
    rslora_run(MUCH_LOWER)
    assert "plain LoRA's yardstick" in check("lower", PLAIN).message
    assert "check the settings" in check("lower", NOISY_SAME).message
    assert "is not the answer loss" in check("lower", 0.1234).message
