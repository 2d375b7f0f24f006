"""Comparisons claim a difference only beyond their noise, and say so in words."""

import pytest

from course_utils.compare import compare_seeds, paired_accuracy
from course_utils.evaluate import EvalReport, ScoredExample


def test_non_overlapping_seeds_are_a_detected_difference():
    c = compare_seeds("r=8", [0.41, 0.43], "r=1", [0.52, 0.50])
    assert c.detected and c.winner == "r=8" and c.gap == pytest.approx(0.09)
    assert c.spread == pytest.approx(0.02)
    assert c.sentence().startswith("r=8 is better") and "every seed of r=8" in c.sentence()


def test_overlapping_seeds_are_no_difference_detected():
    c = compare_seeds("QLoRA", [0.45, 0.40], "LoRA", [0.42, 0.44])
    assert not c.detected and c.winner is None
    assert c.sentence().startswith("no difference detected") and "within the seed spread" in c.sentence()


@pytest.mark.parametrize("a, b", [([0.4], [0.5, 0.6]), ([0.4, float("nan")], [0.5, 0.6])])
def test_one_seed_or_nan_is_refused(a, b):
    with pytest.raises(ValueError):
        compare_seeds("a", a, "b", b)


def report(correct):
    return EvalReport([ScoredExample(f"q{i}", ok, float(ok), "match" if ok else "wrong result", "")
                       for i, ok in enumerate(correct)])


def test_paired_accuracy_uses_only_the_questions_the_models_disagree_on():
    a = report([True] * 30 + [False] * 10)
    b = report([True] * 20 + [False] * 20)
    p = paired_accuracy("adapter", a, "base", b)
    assert (p.both, p.only_a, p.only_b, p.neither) == (20, 10, 0, 10)
    assert p.difference == pytest.approx(0.25) and p.detected
    assert p.sentence().startswith("adapter is more accurate by 25.0%")


def test_paired_accuracy_small_disagreement_is_not_detected():
    a = report([True, False, True, False] * 10)
    b = report([False, True, True, False] * 10)  # 10 right only for each
    p = paired_accuracy("a", a, "b", b)
    assert p.difference == 0 and not p.detected and p.sentence().startswith("no accuracy difference detected")


def test_paired_accuracy_needs_the_same_questions():
    with pytest.raises(ValueError, match="same examples"):
        paired_accuracy("a", report([True, False]), "b", report([True]))
