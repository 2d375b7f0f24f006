"""course_utils.lora: parity with PEFT, merging, parameter counts and errors."""

import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from course_utils.lora import (
    LoraConfig,
    LoraLinear,
    count_trainable,
    inject_lora,
    lora_budget,
    lora_layers,
    lora_scaling,
    mark_only_lora_trainable,
    merge_lora,
)


class Block(nn.Module):
    """A miniature attention-plus-MLP block with Llama-style module names."""

    def __init__(self, hidden=24, kv=8, inner=40):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, kv, bias=False)
        self.v_proj, self.o_proj = nn.Linear(hidden, kv, bias=False), nn.Linear(kv, hidden, bias=False)
        self.up_proj, self.down_proj = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x):
        attn = self.o_proj(torch.tanh(self.q_proj(x))[..., : self.v_proj.out_features] * self.v_proj(x) + self.k_proj(x))
        return self.down_proj(torch.relu(self.up_proj(self.norm(x + attn))))


def tiny_model(layers=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict((f"layer{i}", Block()) for i in range(layers)))


def randomise_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))


@pytest.mark.parametrize("use_rslora", [False, True])
def test_layer_matches_peft_for_the_same_weights(use_rslora):
    peft = pytest.importorskip("peft")
    base = nn.Sequential(OrderedDict(q_proj=nn.Linear(20, 12)))
    ours = LoraLinear(copy.deepcopy(base.q_proj), r=4, lora_alpha=16, use_rslora=use_rslora)
    with torch.no_grad():
        ours.lora_B.normal_()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj"], use_rslora=use_rslora))
    layer = theirs.base_model.model.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.lora_A)
        layer.lora_B["default"].weight.copy_(ours.lora_B)
    assert layer.scaling["default"] == ours.scaling == (16 / 2 if use_rslora else 16 / 4)
    x = torch.randn(7, 20)
    assert torch.equal(ours(x), theirs(x))
    assert torch.equal(ours.delta_weight(), layer.get_delta_weight("default"))


def test_default_config_matches_peft_defaults():
    peft = pytest.importorskip("peft")
    theirs, ours = peft.LoraConfig(), LoraConfig()
    assert (ours.r, ours.lora_alpha, ours.lora_dropout, ours.use_rslora) == (
        theirs.r, theirs.lora_alpha, theirs.lora_dropout, theirs.use_rslora)


def test_init_b_zero_a_kaiming_and_output_unchanged():
    torch.manual_seed(0)
    base = nn.Linear(300, 50)
    layer = LoraLinear(copy.deepcopy(base), r=8)
    assert layer.lora_A.shape == (8, 300) and layer.lora_B.shape == (50, 8)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(300)  # kaiming_uniform(a=sqrt(5)) on fan_in 300
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    x = torch.randn(4, 300)
    assert torch.equal(layer(x), base(x))


def test_base_is_frozen_and_only_lora_gets_gradients():
    layer = LoraLinear(nn.Linear(10, 6), r=2)
    layer(torch.randn(3, 10)).sum().backward()
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None
    assert layer.lora_B.grad is not None and layer.lora_B.grad.abs().sum() > 0


def test_scaling_plain_and_rslora():
    assert lora_scaling(16, 32) == 2.0
    assert lora_scaling(16, 32, use_rslora=True) == 8.0
    assert LoraConfig(r=4, lora_alpha=8, use_rslora=True).scaling == 4.0


def test_merge_then_unmerge_round_trips():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(32, 16), r=4, lora_alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_()
    original = layer.base_layer.weight.clone()
    x = torch.randn(5, 32)
    before = layer(x)
    layer.merge()
    assert layer.merged
    expected = original + (8 / 4) * layer.lora_B.detach() @ layer.lora_A.detach()
    assert torch.allclose(layer.base_layer.weight, expected, atol=1e-6)
    assert torch.allclose(layer(x), before, atol=1e-5)
    layer.unmerge()
    assert not layer.merged
    assert torch.allclose(layer.base_layer.weight, original, atol=1e-6)
    assert torch.allclose(layer(x), before, atol=1e-5)


def test_merge_is_explicit_and_not_a_side_effect_of_train_or_eval():
    layer = LoraLinear(nn.Linear(8, 8), r=2)
    with torch.no_grad():
        layer.lora_B.fill_(1.0)
    weight = layer.base_layer.weight.clone()
    layer.eval()
    layer.train()
    assert torch.equal(layer.base_layer.weight, weight) and not layer.merged


def test_double_merge_and_unmerged_unmerge_raise():
    layer = LoraLinear(nn.Linear(8, 8), r=2)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_dropout_applies_to_the_lora_path_only_in_train_mode():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(16, 16), r=4, lora_dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(64, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))


def test_inject_counts_r_times_in_plus_out_per_matrix():
    model = tiny_model(layers=3)
    inject_lora(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    per_block = 4 * (24 + 24) + 4 * (24 + 8)
    assert count_trainable(model) == 3 * per_block
    assert len(list(lora_layers(model))) == 6
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_inject_keeps_outputs_at_init_and_merge_lora_returns_a_plain_model():
    model = tiny_model()
    x = torch.randn(5, 24)
    before = model(x)
    inject_lora(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert torch.equal(model(x), before)
    randomise_lora(model)
    adapted = model(x)
    assert not torch.allclose(adapted, before)
    merged = merge_lora(model)
    assert not list(lora_layers(merged))
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if n.endswith("proj"))
    assert torch.allclose(merged(x), adapted, atol=1e-4)


def test_mark_only_lora_trainable_freezes_everything_else():
    model = tiny_model()
    inject_lora(model, LoraConfig(target_modules=["o_proj"], r=2))
    for p in model.parameters():
        p.requires_grad_(True)
    mark_only_lora_trainable(model)
    assert count_trainable(model) == 2 * 2 * (8 + 24)


def test_unknown_target_names_the_available_linears():
    with pytest.raises(ValueError, match=r"'qproj'.*\['down_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]"):
        inject_lora(tiny_model(), LoraConfig(target_modules=["q_proj", "qproj"]))


def test_target_that_is_not_a_linear_is_rejected():
    with pytest.raises(ValueError, match="LayerNorm"):
        inject_lora(tiny_model(), LoraConfig(target_modules=["norm"]))


def test_rank_above_min_dimension_is_rejected_before_anything_changes():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"r=9 exceeds min\(in, out\) = 8"):
        inject_lora(model, LoraConfig(r=9, target_modules=["q_proj", "v_proj"]))
    assert not list(lora_layers(model))
    with pytest.raises(ValueError, match="between 1 and"):
        LoraLinear(nn.Linear(4, 3), r=4)


@pytest.mark.parametrize("kwargs", [dict(r=0), dict(r=-2), dict(r=2.5), dict(lora_alpha=0),
                                    dict(lora_dropout=1.0), dict(target_modules="q_proj"), dict(target_modules=[])])
def test_bad_config_values_raise(kwargs):
    with pytest.raises(ValueError):
        LoraConfig(**kwargs)


def test_wrapping_something_that_is_not_linear_raises():
    with pytest.raises(ValueError, match="nn.Linear"):
        LoraLinear(nn.Conv1d(3, 3, 1))


def test_targeting_an_adapted_layer_again_says_so_and_lists_plain_names():
    model = inject_lora(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="already have LoRA") as error:
        inject_lora(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert "base_layer" not in str(error.value) and "'q_proj'" in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=True), r"got True \(bool\)"),  # True is the int 1 in Python, but not a rank
    (dict(r=False), r"got False \(bool\)"),
    (dict(r="8"), r"got '8' \(str\)"),
    (dict(r=8.0), r"got 8.0 \(float\)"),
    (dict(lora_alpha=0), "finite positive"),
    (dict(lora_alpha=-16), "finite positive"),
    (dict(lora_alpha=float("nan")), "got nan"),
    (dict(lora_alpha=float("inf")), "got inf"),
    (dict(lora_alpha=True), r"\(bool\)"),
    (dict(lora_alpha="16"), r"\(str\)"),
    (dict(lora_dropout=float("nan")), r"\[0, 1\)"),
    (dict(lora_dropout=-0.1), r"\[0, 1\)"),
    (dict(use_rslora="yes"), "True or False"),
])
def test_config_and_layer_refuse_bad_values_saying_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        LoraConfig(**kwargs)
    assert "usual" in str(error.value) or "default" in str(error.value) or "True or False" in str(error.value)
    with pytest.raises(ValueError, match=message):
        LoraLinear(nn.Linear(16, 16), **kwargs)


def test_numpy_numbers_are_accepted_as_rank_and_alpha():
    import numpy as np

    config = LoraConfig(r=np.int64(4), lora_alpha=np.float32(8.0))
    assert config.r == 4 and type(config.r) is int and config.scaling == 2.0
    assert LoraLinear(nn.Linear(8, 8), r=np.int64(2), lora_alpha=np.float64(4.0)).scaling == 2.0


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]])
def test_lora_budget_from_shapes_equals_peft_trainable_count(targets):
    """Lessons 04 and 05 plan budgets with lora_budget before any adapter exists: PEFT must build exactly that."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model = tiny_model()
    predicted = lora_budget(model, targets, r=3)
    peft_model = get_peft_model(copy.deepcopy(model), PeftLoraConfig(r=3, target_modules=targets))
    assert predicted == sum(p.numel() for p in peft_model.parameters() if p.requires_grad) > 0
    assert lora_budget(peft_model, targets, r=3) == predicted  # the wrapped layers (.base_layer) count the same
    with pytest.raises(ValueError, match="r must be an integer at least 1"):
        lora_budget(model, targets, r=0)
