"""fastest_modes: the fastest serving mode, judged against the spread between repeats."""

import pytest

from course_utils.choose import fastest_modes


def test_clear_winner_and_noise():
    tied, noise = fastest_modes({"a": [1.0, 1.1], "b": [2.0, 2.1], "c": [3.0, 3.0]})
    assert tied == ["a"] and noise == pytest.approx(0.1)


def test_modes_within_the_noise_are_tied_fastest_first():
    tied, noise = fastest_modes({"a": [1.05, 1.3], "b": [1.0, 1.02], "c": [5.0, 5.1]})
    assert noise == pytest.approx(0.25 / 1.05)
    assert tied == ["b", "a"]


def test_best_repeat_counts_not_the_mean():
    # b has one disturbed repeat; its best is still the fastest, and its spread is the noise
    tied, noise = fastest_modes({"a": [1.5, 1.5], "b": [1.0, 3.0]})
    assert noise == pytest.approx(2.0) and tied == ["b", "a"]


@pytest.mark.parametrize("bad", [{}, {"a": [1.0]}, {"a": [1.0, 0.0]}, {"a": [1.0, -1.0], "b": [1.0, 1.0]}])
def test_refuses_timings_without_noise_or_positive_times(bad):
    with pytest.raises(ValueError):
        fastest_modes(bad)
