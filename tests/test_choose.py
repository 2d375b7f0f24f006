"""The decision helper: its answer must agree with the memory planner it is built on."""

import pytest

from course_utils.choose import (DOES_NOT_FIT, as_profile, decision_table, format_decision_table, recommend,
                                 serving_bytes)
from course_utils.hardware import GIB, HardwareProfile
from course_utils.memory import plan_memory

T4 = HardwareProfile("cuda", "Tesla T4", 14.7, (7, 5), native_bf16=False)
A100_80 = HardwareProfile("cuda", "A100 80GB", 79.2, (8, 0), native_bf16=True)
CPU16 = HardwareProfile("cpu", "CPU 16 GB", 16.0)


def _plan(rec, model):
    method = rec.method
    return plan_memory(model, method, rank=rec.rank or 16, targets=rec.targets or "all-linear", batch=rec.batch,
                       seq_len=rec.seq_len, gradient_checkpointing=rec.gradient_checkpointing,
                       optimizer=rec.optimizer, profile=T4 if rec.device == T4.name else A100_80)


def test_recommended_plan_fits_and_is_the_planners_number():
    rec = recommend("qwen2.5-7b", T4)
    assert rec.fits and rec.method == "qlora"
    plan = _plan(rec, "qwen2.5-7b")
    assert plan.total == pytest.approx(rec.need_gib * GIB)
    assert plan.total <= 0.9 * T4.memory_gib * GIB


def test_less_compromising_methods_do_not_fit_when_qlora_is_chosen():
    rec = recommend("qwen2.5-7b", T4)
    usable = 0.9 * T4.memory_gib * GIB
    for method in ("full", "lora"):  # the smallest setting the helper would try for them
        smallest = plan_memory("qwen2.5-7b", method, rank=16, batch=1, seq_len=rec.seq_len,
                               gradient_checkpointing=True, optimizer="paged_adamw_8bit", profile=T4)
        assert smallest.total > usable


def test_bigger_device_never_gets_a_more_compromising_method():
    order = ["full", "lora", "qlora", DOES_NOT_FIT]
    for model in ("qwen2.5-1.5b", "llama-13b"):
        small, big = recommend(model, T4), recommend(model, A100_80)
        assert order.index(big.method) <= order.index(small.method)


def test_too_big_model_does_not_fit_and_says_how_much_is_missing():
    rec = recommend("llama-70b", T4)
    assert rec.method == DOES_NOT_FIT and not rec.fits
    assert rec.need_gib > rec.usable_gib
    assert "GiB more than" in rec.reason


def test_batch_is_halved_with_gradient_accumulation_keeping_the_effective_batch():
    rec = recommend("qwen2.5-7b", T4, batch=64, seq_len=1024)
    assert rec.fits and rec.batch < 64
    assert rec.batch * rec.grad_accum == 64


def test_tiny_model_full_fine_tune_and_methods_filter():
    assert recommend("smollm2-135m", CPU16).method == "full"
    assert recommend("smollm2-135m", CPU16, methods=("lora", "qlora")).method == "lora"


def test_cpu_reason_warns_that_large_models_are_slow():
    rec = recommend("qwen2.5-7b", CPU16)
    assert "use a GPU" in rec.reason


def test_headroom_is_respected():
    full = recommend("qwen2.5-1.5b", A100_80, headroom=1.0)
    assert full.need_gib <= A100_80.memory_gib
    tight = recommend("qwen2.5-1.5b", A100_80, headroom=0.05)
    assert tight.need_gib <= 0.05 * A100_80.memory_gib or not tight.fits


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="HardwareProfile"):
        recommend("qwen2.5-7b", "T4")
    with pytest.raises(ValueError, match="positive"):
        as_profile(-3)
    with pytest.raises(ValueError, match="headroom"):
        recommend("qwen2.5-7b", T4, headroom=1.5)
    with pytest.raises(ValueError, match="methods"):
        recommend("qwen2.5-7b", T4, methods=("dora",))
    with pytest.raises(ValueError, match="batch"):
        recommend("qwen2.5-7b", T4, batch=0)


def test_number_of_gib_means_a_bf16_gpu():
    profile = as_profile(24)
    assert profile.is_gpu and profile.native_bf16 and profile.memory_gib == 24


def test_table_has_one_cell_per_pair():
    recs = decision_table(["smollm2-135m", "qwen2.5-1.5b"], [T4, CPU16])
    assert len(recs) == 4
    text = format_decision_table(recs)
    assert text.count("\n") == 2 and "Tesla T4" in text and "qwen2.5-1.5b" in text


def test_serving_bytes_hot_swap_vs_merged():
    one = serving_bytes("qwen2.5-7b", 1)
    five = serving_bytes("qwen2.5-7b", 5)
    assert five["hot_swap"] - one["hot_swap"] == 4 * one["adapter"]
    assert five["merged_copies"] == 5 * one["base"]
    assert one["adapter"] < one["base"] / 50
    # An adapter is r (d + k) fp32 values per targeted matrix.
    plan = plan_memory("qwen2.5-7b", "lora", rank=16, batch=1, seq_len=1, device="cpu")
    expected = sum(4 * 16 * (lin.in_features + lin.out_features) for lin in plan.layout.linears)
    assert one["adapter"] == expected
    with pytest.raises(ValueError):
        serving_bytes("qwen2.5-7b", 0)
