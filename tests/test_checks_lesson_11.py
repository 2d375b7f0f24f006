"""Self-checks of lesson 11: placeholder, typical wrong answers, right answer."""

import math

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG
from course_utils.choose import serving_bytes
from course_utils.hardware import GIB, HardwareProfile
from course_utils.memory import plan_memory

T4 = HardwareProfile("cuda", "Tesla T4", 14.7, (7, 5), native_bf16=False)
SETTINGS = dict(method="qlora", rank=16, seq_len=1024, gradient_checkpointing=True, optimizer="paged_adamw_8bit")


def _fits(batch, share=0.9, **changes):
    plan = plan_memory("qwen2.5-7b", profile=T4, batch=batch, **(SETTINGS | changes))
    return plan.total <= share * T4.memory_gib * GIB


def _largest(share=0.9, **changes):
    b = 0
    while _fits(b + 1, share, **changes):
        b += 1
    return b


def test_largest_batch():
    right = _largest()  # a plain linear search, independent of the check's bisection
    assert right >= 1 and not _fits(right + 1)
    check = lambda a: checks.check_largest_batch(a, "qwen2.5-7b", T4, **SETTINGS)
    assert check(...).status == NOT_ATTEMPTED
    assert check(right).correct
    assert "does NOT fit" in check(right + 1).message
    assert check(max(1, right - 1)).status == WRONG
    full = _largest(share=1.0)
    if full != right and full != right + 1:
        assert "headroom" in check(full).message
    assert check("eight").status == WRONG


def test_largest_fitting_batch_is_zero_when_nothing_fits():
    assert checks.largest_fitting_batch("llama-70b", T4, **SETTINGS) == 0


def test_adapters_vs_copies():
    sizes = serving_bytes("qwen2.5-7b", 1, rank=16, dtype="bf16")
    usable = 0.9 * 79.2 * GIB
    right = (math.floor(usable / sizes["base"]), math.floor((usable - sizes["base"]) / sizes["adapter"]))
    check = lambda a: checks.check_adapters_vs_copies(a, "qwen2.5-7b", 79.2, rank=16, dtype="bf16")
    assert check((..., ...)).status == NOT_ATTEMPTED
    assert check(...).status == NOT_ATTEMPTED
    assert check(right).correct
    assert "headroom" in check((math.floor(79.2 * GIB / sizes["base"]), right[1])).message \
        or math.floor(79.2 * GIB / sizes["base"]) == right[0]
    assert "base model takes its share" in check((right[0], math.floor(usable / sizes["adapter"]))).message
    assert "pair" in check(right[0]).message
    assert check((right[0] + 1, right[1])).status == WRONG


def test_equivalent_alpha():
    check = lambda a: checks.check_equivalent_alpha(a, r_old=8, alpha_old=16, r_new=32)
    assert check((..., ...)).status == NOT_ATTEMPTED
    assert check((64, 2 * math.sqrt(32))).correct
    assert "fixed" in check((16, 2 * math.sqrt(32))).message
    assert "sqrt(r), not r" in check((64, 64)).message
    assert check((64, 16)).status == WRONG
    assert "pair" in check(64).message


MODES = ["one batch, adapter_names", "set_adapter per adapter", "merged copy per adapter"]
SQL_ONLY = [{"task": "sql"}] * 4
CLEAR = {MODES[0]: [2.2, 2.1], MODES[1]: [2.0, 2.05], MODES[2]: [1.5, 1.52]}  # merged clearly fastest
TIED = {MODES[0]: [2.0, 2.4], MODES[1]: [2.1, 2.2], MODES[2]: [1.95, 2.3]}  # 20% noise: all within it


def serving(prediction, observed, requests=SQL_ONLY):
    return checks.check_serving_experiment(prediction, observed, requests=requests, modes=MODES)


def test_serving_experiment_placeholders_and_inputs():
    assert serving(..., ...).status == NOT_ATTEMPTED
    assert "prediction first" in serving(..., CLEAR).message
    assert "now time" in serving(MODES[2], ...).message
    assert "not a serving mode" in serving("merged", CLEAR).message
    assert "seconds only" in serving(MODES[2], (CLEAR, {})).message
    assert "every mode" in serving(MODES[2], {MODES[0]: [1.0, 1.0]}).message
    assert "mix tasks" in serving(MODES[2], CLEAR, requests=[{"task": "sql"}, {"task": "json"}]).message
    assert "could not check" in serving(MODES[2], {m: [1.0] for m in MODES}).message  # one repeat: no noise


def test_serving_experiment_judges_against_the_timing_noise():
    assert serving(MODES[2], CLEAR).correct
    wrong = serving(MODES[0], CLEAR)
    assert wrong.status == WRONG and "nothing to mix" in wrong.message and MODES[2] in wrong.message
    for mode in MODES:  # a tie: any of the tied modes is a right prediction
        assert serving(mode, TIED).correct
