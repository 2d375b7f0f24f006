"""Self-checks of lessons 01 and 03: placeholder, typical wrong answers, right answer."""

import math

import pytest
import torch
from torch import nn

from course_utils import checks
from course_utils.checks import CORRECT, NOT_ATTEMPTED, WRONG
from course_utils.lora import LoraConfig, LoraLinear, inject_lora

S = torch.tensor([5.0, 4.0, 2.0, 1.0, 0.5])


def status(feedback):
    return feedback.status


def test_rank_k_error():
    k = 2
    right = math.sqrt(2**2 + 1**2 + 0.5**2)
    assert status(checks.check_rank_k_error(..., S, k)) == NOT_ATTEMPTED
    assert checks.check_rank_k_error(right, S, k).correct
    assert checks.check_rank_k_error(torch.tensor(right), S, k).correct
    for wrong, hint in [(right**2, "square root"), (2 + 1 + 0.5, "squares"), (math.sqrt(25 + 16), "keep"),
                        (math.sqrt(1 + 0.25), "off by one"), (3.0, "Eckart-Young")]:
        feedback = checks.check_rank_k_error(wrong, S, k)
        assert feedback.status == WRONG and hint in feedback.message, (wrong, feedback.message)
    assert checks.check_rank_k_error("abc", S, k).status == WRONG


def test_directions_for_energy():
    # energies 25, 16, 4, 1, 0.25 of 46.25: 90% = 41.6 needs 3 directions; plain sums 12.5 of 11.25 needs 4
    assert status(checks.check_directions_for_energy(..., S)) == NOT_ATTEMPTED
    assert checks.check_directions_for_energy(3, S).correct
    assert checks.check_directions_for_energy(torch.tensor(3), S).correct
    assert "squared" in checks.check_directions_for_energy(4, S).message
    assert "one short" in checks.check_directions_for_energy(2, S).message
    assert checks.check_directions_for_energy(0.9, S).status == WRONG
    assert checks.check_directions_for_energy(1, S).status == WRONG


def test_factorisation_params():
    d, n, k = 100, 30, 4
    assert status(checks.check_factorisation_params(..., d, n, k)) == NOT_ATTEMPTED
    assert checks.check_factorisation_params(4 * 130, d, n, k).correct
    for wrong, hint in [(3000, "full"), (4 * 130 + 4, "singular values"), (4 * 3000, "add"), (400, "one factor"),
                        (7, "is not")]:
        feedback = checks.check_factorisation_params(wrong, d, n, k)
        assert feedback.status == WRONG and hint in feedback.message, (wrong, feedback.message)


def test_break_even_rank():
    d, n = 100, 30  # k * 130 < 3000 for k <= 23
    assert status(checks.check_break_even_rank(..., d, n)) == NOT_ATTEMPTED
    assert checks.check_break_even_rank(23, d, n).correct
    assert "not fewer" in checks.check_break_even_rank(24, d, n).message
    assert "smaller than it needs" in checks.check_break_even_rank(22, d, n).message
    # a square matrix where k (d + n) = d n exactly is not a saving
    assert checks.check_break_even_rank(1, 2, 2).status == WRONG
    assert checks.check_break_even_rank(0, 2, 2).correct


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"q_proj": nn.Linear(12, 12), "v_proj": nn.Linear(12, 4)})
                                    for _ in range(2))


def test_lora_trainable_count_on_a_fresh_and_an_injected_model():
    r, targets = 2, ["q_proj", "v_proj"]
    right = 2 * (r * (12 + 12) + r * (12 + 4))
    for model in (TwoLayers(), inject_lora(TwoLayers(), LoraConfig(r=r, target_modules=targets))):
        assert status(checks.check_lora_trainable_count(..., model, targets, r)) == NOT_ATTEMPTED
        assert checks.check_lora_trainable_count(right, model, targets, r).correct
        assert "frozen" in checks.check_lora_trainable_count(2 * (144 + 48), model, targets, r).message
        assert "one decoder layer" in checks.check_lora_trainable_count(right // 2, model, targets, r).message
        assert "one of the two" in checks.check_lora_trainable_count(2 * r * 24, model, targets, r).message
        assert checks.check_lora_trainable_count(right + 1, model, targets, r).status == WRONG


def test_rslora_scaling():
    assert status(checks.check_rslora_scaling(..., 64, 16)) == NOT_ATTEMPTED
    assert checks.check_rslora_scaling(2.0, 64, 16).correct
    assert "lora_alpha / r" in checks.check_rslora_scaling(0.25, 64, 16).message
    assert "multiplied" in checks.check_rslora_scaling(128.0, 64, 16).message
    assert "only r" in checks.check_rslora_scaling(0.5, 64, 16).message


def test_merged_weight():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(6, 5), r=2, lora_alpha=6)
    with torch.no_grad():
        layer.lora_B.normal_()
    W, B, A = layer.base_layer.weight.detach(), layer.lora_B.detach(), layer.lora_A.detach()
    assert status(checks.check_merged_weight(..., layer)) == NOT_ATTEMPTED
    assert checks.check_merged_weight(W + 3.0 * B @ A, layer).correct
    for wrong, hint in [(W + B @ A, "scaled"), (3.0 * B @ A, "only Delta W"), (W, "frozen W alone"),
                        ((W + 3.0 * B @ A).T, "shape"), (W - 3.0 * B @ A, "not W + scaling")]:
        feedback = checks.check_merged_weight(wrong, layer)
        assert feedback.status == WRONG and hint in feedback.message, feedback.message
    layer.merge()
    with pytest.raises(ValueError, match="unmerged"):
        checks.check_merged_weight(W, layer)
