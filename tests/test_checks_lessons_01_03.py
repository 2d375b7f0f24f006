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


def low_rank_image():
    """A 40 x 30 matrix with its energy in 3 directions, and a noisy copy (noise: 60% of its norm)."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(40, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 30, generator=g, dtype=torch.float64)
    noise = torch.randn(40, 30, generator=g, dtype=torch.float64)
    return m, m + 0.6 * noise * (torch.linalg.matrix_norm(m) / torch.linalg.matrix_norm(noise))


def k_for(matrix, fraction=0.9):
    energy = torch.linalg.svdvals(matrix).square().cumsum(0)
    return int((energy < fraction * energy[-1]).sum()) + 1


def test_noise_experiment():
    image, noisy = low_rank_image()
    k_clean, k_noisy = k_for(image), k_for(noisy)
    assert k_noisy > k_clean  # the fixture shows the effect the exercise is about
    check = checks.check_noise_experiment
    assert status(check(..., ..., image, noisy)) == NOT_ATTEMPTED
    halfway = check("more", ..., image, noisy)
    assert halfway.status == NOT_ATTEMPTED and "now run the experiment" in halfway.message
    assert check("more", k_noisy, image, noisy).correct
    assert check("More ", torch.tensor(k_noisy), image, noisy).correct
    for prediction in ("the same", "fewer"):
        feedback = check(prediction, k_noisy, image, noisy)  # right observation, wrong prediction: the mechanism
        assert feedback.status == WRONG and "no preferred directions" in feedback.message, feedback.message
    assert "clean image's count" in check("more", k_clean, image, noisy).message  # wrong observation
    assert "is not the smallest k" in check("more", k_noisy + 5, image, noisy).message
    assert "integer" in check("more", 0.9, image, noisy).message
    assert "not one of" in check("bigger maybe", k_noisy, image, noisy).message
    assert "equals the image" in check("more", k_clean, image, image.clone()).message


def dora_fixture():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(24, 24), r=4, lora_alpha=8)  # square, so a column-norm mistake keeps its shape
    return layer, torch.randn(5, 24), layer.base_layer.weight.detach().norm(dim=1)


def dora_forward(layer, magnitude, x):
    adapted = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
    return nn.functional.linear(x, magnitude[:, None] * adapted / adapted.norm(dim=1, keepdim=True),
                                layer.base_layer.bias)


def test_dora_experiment():
    layer, x, magnitude = dora_fixture()
    observed = (dora_forward(layer, magnitude, x) - layer.base_layer(x)).abs().max().item()
    check = checks.check_dora_experiment
    assert status(check(..., ..., dora_forward, magnitude, layer, x)) == NOT_ATTEMPTED
    assert status(check("unchanged", ..., dora_forward, magnitude, layer, x)) == NOT_ATTEMPTED
    assert check("unchanged", observed, dora_forward, magnitude, layer, x).correct
    assert check("No change", torch.tensor(observed), dora_forward, magnitude, layer, x).correct
    wrong = check("changes", observed, dora_forward, magnitude, layer, x)  # wrong prediction: the mechanism
    assert wrong.status == WRONG and "starts at the row norms" in wrong.message and "unchanged" in wrong.message

    def column_norms(layer, m, x):
        adapted = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
        return nn.functional.linear(x, m[None, :] * adapted / adapted.norm(dim=0, keepdim=True), layer.base_layer.bias)

    def no_division(layer, m, x):
        adapted = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
        return nn.functional.linear(x, m[:, None] * adapted, layer.base_layer.bias)

    def change_only(layer, m, x):
        return dora_forward(layer, m, x) - layer.base_layer(x)

    for function, hint in [(column_norms, "column norms"), (no_division, "forgets to divide"),
                           (change_only, "only the change"), (lambda l, m, x: x @ l.lora_A.T, "shape"),
                           ("dora", "function itself")]:
        feedback = check("unchanged", observed, function, magnitude, layer, x)
        assert feedback.status == WRONG and hint in feedback.message, (hint, feedback.message)
    W = layer.base_layer.weight.detach()
    for m, hint in [(W.norm(dim=0), "column norms"), (W.norm().expand(24).clone(), "norm of each row"),
                    (W.norm().reshape(1), "one per output feature")]:
        feedback = check("unchanged", observed, dora_forward, m, layer, x)
        assert feedback.status == WRONG and hint in feedback.message, (hint, feedback.message)
    assert "is not what your dora_forward gives" in check("unchanged", 0.3, dora_forward, magnitude, layer, x).message
    assert "not one of" in check("maybe", observed, dora_forward, magnitude, layer, x).message
