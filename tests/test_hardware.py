"""The hardware profile picks the right compute dtype for CPU, T4 and A100."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from course_utils.hardware import HardwareProfile, detect, profile_from_cuda_properties

GIB = 1024**3


def fake_props(name: str, memory_gib: float, major: int, minor: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, total_memory=int(memory_gib * GIB), major=major, minor=minor)


def test_t4_computes_in_fp16_because_it_has_no_native_bf16():
    t4 = profile_from_cuda_properties(fake_props("Tesla T4", 14.7, 7, 5), native_bf16=False)
    assert t4.compute_dtype == torch.float16
    assert t4.compute_capability == (7, 5)
    assert t4.device == "cuda" and t4.is_gpu and not t4.quick
    assert "7.5" in t4.summary() and "float16" in t4.summary()


def test_a100_computes_in_bf16():
    a100 = profile_from_cuda_properties(fake_props("NVIDIA A100-SXM4-40GB", 39.4, 8, 0), native_bf16=True)
    assert a100.compute_dtype == torch.bfloat16
    assert round(a100.memory_gib) == 39
    assert a100.pick(cpu="small", gpu="big") == "big"


def test_cpu_computes_in_fp32_and_uses_quick_settings():
    cpu = HardwareProfile("cpu", "x86_64", 23.0)
    assert cpu.compute_dtype == torch.float32
    assert cpu.quick and cpu.pick(cpu=10, gpu=1000) == 10
    assert "quick" in str(cpu)


def test_quick_mode_can_be_forced_on_a_gpu(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    a100 = profile_from_cuda_properties(fake_props("A100", 80, 8, 0), native_bf16=True)
    assert a100.pick(cpu=1, gpu=2) == 1


def test_detect_on_this_machine_matches_torch():
    profile = detect()
    assert profile.kind == ("cuda" if torch.cuda.is_available() else profile.kind)
    if not torch.cuda.is_available():
        assert profile.compute_dtype == torch.float32
    assert profile.memory_gib > 0


def test_lesson_plan_promises_the_7b_exactly_where_the_capstone_plan_fits():
    """Lesson 00's plan follows lesson 10's decision (the recipe's memory plan), not a fixed memory size."""
    from course_utils.capstone import QLoRARecipe
    from course_utils.course_plan import lesson_plan
    from course_utils.hardware import HardwareProfile

    cards = {"T4": HardwareProfile(kind="cuda", name="Tesla T4", memory_gib=14.74, compute_capability=(7, 5)),
             "12 GB Ampere": HardwareProfile(kind="cuda", name="RTX 3060", memory_gib=11.76,
                                             compute_capability=(8, 6), native_bf16=True),
             "8 GB Turing": HardwareProfile(kind="cuda", name="RTX 2070", memory_gib=7.79, compute_capability=(7, 5)),
             "CPU": HardwareProfile(kind="cpu", name="a CPU", memory_gib=24.0)}
    for name, card in cards.items():
        capstone = dict(lesson_plan(card))["10 capstone"]
        fits = card.is_gpu and QLoRARecipe().plan(card).verdict(card).fits
        assert capstone.startswith("Qwen2.5-7B-Instruct in NF4") == fits, (name, capstone)
        assert capstone.startswith("the tiny SmolLM2-135M") == (not fits), (name, capstone)
    assert dict(lesson_plan(cards["12 GB Ampere"]))["10 capstone"].startswith("Qwen2.5-7B")  # under 14 GiB, bf16: fits
    assert dict(lesson_plan(cards["8 GB Turing"]))["10 capstone"].startswith("the tiny")


@pytest.mark.parametrize("field, value", [("memory_gib", "16"), ("memory_gib", -5), ("memory_gib", float("nan")),
                                          ("memory_gib", True), ("kind", "tpu"), ("cpu_count", 0), ("cpu_count", 2.5)])
def test_a_profile_refuses_values_it_cannot_plan_with(field, value):
    """memory_gib="16" used to build a 2 GiB string in plan.verdict before failing; -5 was accepted; NaN failed
    with "cannot convert float NaN to integer"."""
    values = dict(kind="cuda", name="test", memory_gib=15.0, cpu_count=2) | {field: value}
    with pytest.raises(ValueError, match=field):
        HardwareProfile(**values)
    assert HardwareProfile(kind="cuda", name="test", memory_gib=np.float64(15.0), cpu_count=np.int64(2)).memory_gib == 15.0
