"""Comparisons claim a difference only beyond their noise, and say so in words."""

import pytest

from course_utils.compare import ExampleLosses, compare_runs, paired_accuracy
from course_utils.evaluate import EvalReport, ScoredExample


def runs(losses_per_example, count=10):
    return ExampleLosses.of([v * count for v in losses_per_example], [count] * len(losses_per_example))


def test_a_choice_that_wins_with_every_seed_beyond_its_noise_is_detected():
    questions = [0.4, 0.6, 0.5, 0.45, 0.55, 0.5, 0.42, 0.58]
    # seed 1 is luckier for both choices: the seed's luck is larger than the choices' gap, and cancels
    a = [runs(questions), runs([q - 0.1 for q in questions])]
    b = [runs([q + 0.05 for q in questions]), runs([q - 0.05 for q in questions])]
    c = compare_runs("r=8", a, "r=1", b)
    assert c.winner == "r=8" and c.detected
    assert c.seed_spread == pytest.approx(0.1)  # two seeds of one choice are further apart than the choices
    assert [d for d, _ in c.per_seed] == pytest.approx([0.05, 0.05])
    assert c.sentence().startswith("r=8 is better")


def test_differences_within_their_noise_are_not_claimed():
    base = [0.4, 0.6, 0.5, 0.45, 0.55, 0.5, 0.42, 0.58]
    wobble = [0.03, -0.03, 0.02, -0.02, 0.03, -0.03, 0.01, -0.01]
    a = [runs(base), runs(base)]
    b = [runs([q + w + 0.002 for q, w in zip(base, wobble)]), runs([q - w - 0.002 for q, w in zip(base, wobble)])]
    c = compare_runs("QLoRA", a, "LoRA", b)
    assert not c.detected and c.sentence().startswith("no difference detected")


def test_a_win_with_only_one_seed_is_not_claimed():
    base = [0.4, 0.6, 0.5, 0.45, 0.55, 0.5, 0.42, 0.58]
    a = [runs(base), runs(base)]
    b = [runs([q + 0.1 for q in base]), runs([q - 0.1 for q in base])]  # B wins one seed, loses the other
    assert compare_runs("a", a, "b", b).winner is None


def test_one_seed_or_different_questions_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        compare_runs("a", [runs([0.5, 0.4])], "b", [runs([0.5, 0.4])])
    with pytest.raises(ValueError, match="same examples"):
        compare_runs("a", [runs([0.5]), runs([0.5])], "b", [runs([0.5], count=3), runs([0.5], count=3)]).per_seed
    with pytest.raises(ValueError, match="finite"):
        ExampleLosses.of([float("nan")], [3])


def test_a_subset_keeps_its_examples_and_their_order():
    losses = ExampleLosses.of([1.0, 4.0, 9.0, 2.0], [1, 2, 3, 4])
    group = losses.subset([2, 0])
    assert group.sums == (9.0, 1.0) and group.counts == (3, 1)
    assert group.mean == pytest.approx(10.0 / 4)
    with pytest.raises(ValueError, match="one sum and one count"):
        losses.subset([])  # an empty group has no yardstick


def report(correct):
    return EvalReport([ScoredExample(f"q{i}", ok, float(ok), "match" if ok else "wrong result", "")
                       for i, ok in enumerate(correct)])


def test_paired_accuracy_uses_only_the_questions_the_models_disagree_on():
    a = report([True] * 30 + [False] * 10)
    b = report([True] * 20 + [False] * 20)
    p = paired_accuracy("adapter", a, "base", b)
    assert (p.both, p.only_a, p.only_b, p.neither) == (20, 10, 0, 10)
    assert p.difference == pytest.approx(0.25) and p.detected
    assert p.p_value == pytest.approx(2 / 2 ** 10)  # 10 of 10 disagreements one way: both tails of a fair coin
    assert p.sentence().startswith("adapter is more accurate by 25.0% (exact McNemar test p = 0.00195)")


def test_paired_accuracy_small_disagreement_is_not_detected():
    a = report([True, False, True, False] * 10)
    b = report([False, True, True, False] * 10)  # 10 right only for each
    p = paired_accuracy("a", a, "b", b)
    assert p.difference == 0 and p.p_value == 1.0 and not p.detected
    assert p.sentence().startswith("no accuracy difference detected") and "inconclusive" in p.sentence()


@pytest.mark.parametrize("only_a, only_b, p_value", [
    (4, 0, 0.125),  # lesson 04 at 0e2787d: "more accurate by 6.2%" under the normal approximation
    (5, 0, 0.0625), (6, 0, 0.03125), (8, 2, 0.109375), (9, 1, 0.021484375), (0, 0, 1.0), (3, 3, 1.0),
])
def test_paired_accuracy_p_value_is_the_exact_binomial_tail(only_a, only_b, p_value):
    a = report([True] * only_a + [False] * only_b + [True, False] * 20)
    b = report([False] * only_a + [True] * only_b + [True, False] * 20)
    p = paired_accuracy("a", a, "b", b)
    assert (p.only_a, p.only_b) == (only_a, only_b)
    assert p.p_value == pytest.approx(p_value, rel=1e-12)
    assert p.detected == (p_value < 0.05)


def test_paired_accuracy_needs_the_same_questions():
    with pytest.raises(ValueError, match="same examples"):
        paired_accuracy("a", report([True, False]), "b", report([True]))
