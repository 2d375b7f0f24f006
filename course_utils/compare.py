"""Comparisons that can fail: a difference is claimed only when it exceeds its measured noise.

The course compares training choices (rank, target modules, QLoRA vs LoRA, NF4
vs FP4, learning rates) on short CPU runs, with the held-out answer loss as
the yardstick (lower is better). Two things make one run's number noisy:

- the training seed (data order, initialisation): two seeds of the *same*
  recipe can differ by more than two recipes do (lesson 05 measures it);
- the sample of validation questions the loss is averaged over.

So `compare_runs` takes, for each choice, one run per seed, with the *same*
seeds for both choices (the same batches in the same order: the seed's own
luck cancels in the difference), and each run's per-question answer losses on
the *same* questions. Per seed it computes the difference of the two losses
and its standard error over the questions. It claims a difference only when,
for every seed, the same choice wins by more than twice that standard error;
otherwise it says "no difference detected" and gives the numbers.

`paired_accuracy` does the same for execution accuracy: only the questions two
models disagree on carry information, and an exact test on those (McNemar's:
each disagreement a fair coin if the models were equally accurate) says
whether they lean one way beyond chance. "Not detected" is inconclusive: it
never says the two are equally accurate.

Both return objects whose `.sentence()` is what a notebook prints or puts in a
plot title, so the text states what was measured, never what was hoped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .cache import computed_once

ALPHA = 0.05  # the level at which paired_accuracy calls a difference detected


@dataclass(frozen=True)
class ExampleLosses:
    """One model on a fixed list of examples: summed answer-token loss and token count per example."""

    sums: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sums) != len(self.counts) or not self.sums:
            raise ValueError(f"need one sum and one count per example, got {len(self.sums)} and {len(self.counts)}.")
        if not all(math.isfinite(v) for v in self.sums) or min(self.counts) <= 0:
            raise ValueError("every loss must be finite and every example must have answer tokens.")

    @classmethod
    def of(cls, sums: Sequence[float], counts: Sequence[int]) -> "ExampleLosses":
        return cls(tuple(float(v) for v in sums), tuple(int(c) for c in counts))

    @property
    def mean(self) -> float:
        """The yardstick: mean loss per answer token."""
        return sum(self.sums) / sum(self.counts)

    def subset(self, positions: Sequence[int]) -> "ExampleLosses":
        """The same model on some of the examples (one group of a split, say), in the order given."""
        return ExampleLosses.of([self.sums[i] for i in positions], [self.counts[i] for i in positions])


def cached_example_losses(path: Path, compute: Callable[[], tuple[Sequence[float], Sequence[int]]]) -> ExampleLosses:
    """Per-question answer losses, computed once and kept at `path`: every yardstick cache of the course.

    `compute()` returns (sums, counts), as `answer_token_losses` does. The
    file is written atomically under a lock (`course_utils.cache.computed_once`),
    so two notebooks score once and a killed kernel leaves no half file.
    """
    return ExampleLosses.of(*computed_once(path, lambda: [list(values) for values in compute()]))


def loss_difference(a: ExampleLosses, b: ExampleLosses) -> tuple[float, float]:
    """(mean of b - mean of a, its standard error over the examples), for two models on the same examples.

    The difference of two token-weighted means is a ratio; its standard error
    is the usual linearisation: the spread of the per-example differences
    around what the overall difference predicts for each example's tokens.
    """
    if a.counts != b.counts:
        raise ValueError("the two runs must be scored on the same examples (their answer-token counts differ).")
    tokens = sum(a.counts)
    per_example = [sb - sa for sa, sb in zip(a.sums, b.sums)]
    difference = sum(per_example) / tokens
    residuals = [d - difference * n for d, n in zip(per_example, a.counts)]
    n = len(per_example)
    variance = sum(r * r for r in residuals) * n / max(n - 1, 1)
    return difference, math.sqrt(variance) / tokens


@dataclass(frozen=True)
class RunComparison:
    """Choice A and choice B, one run per seed each (the same seeds, the same questions)."""

    name_a: str
    name_b: str
    a: tuple[ExampleLosses, ...]
    b: tuple[ExampleLosses, ...]
    metric: str = "answer loss"

    def __post_init__(self) -> None:
        if len(self.a) != len(self.b) or len(self.a) < 2:
            raise ValueError(f"compare the same seeds for both choices, at least 2 (got {len(self.a)} and "
                             f"{len(self.b)}): with one run per choice the noise of training is unknown.")

    @property
    def mean_a(self) -> float:
        return sum(run.mean for run in self.a) / len(self.a)

    @property
    def mean_b(self) -> float:
        return sum(run.mean for run in self.b) / len(self.b)

    @property
    def per_seed(self) -> list[tuple[float, float]]:
        """(B - A, standard error) for each seed."""
        return [loss_difference(ra, rb) for ra, rb in zip(self.a, self.b)]

    @property
    def seed_spread(self) -> float:
        """How far two seeds of the same choice land apart (the largest such gap)."""
        return max(max(r.mean for r in runs) - min(r.mean for r in runs) for runs in (self.a, self.b))

    @property
    def winner(self) -> str | None:
        """The choice with the lower loss for every seed, each time by more than 2 standard errors; else None."""
        pairs = self.per_seed
        if all(d > 2 * se for d, se in pairs):
            return self.name_a
        if all(d < -2 * se for d, se in pairs):
            return self.name_b
        return None

    @property
    def detected(self) -> bool:
        return self.winner is not None

    def sentence(self) -> str:
        values = (f"{self.metric} {self.mean_a:.3f} ({self.name_a}) vs {self.mean_b:.3f} ({self.name_b}) over "
                  f"{len(self.a)} seeds")
        diffs = ", ".join(f"{d:+.3f} ± {2 * se:.3f}" for d, se in self.per_seed)
        if self.detected:
            return (f"{self.winner} is better: {values}; with every seed it wins by more than twice the standard "
                    f"error over the questions (B - A per seed: {diffs})")
        return (f"no difference detected between {self.name_a} and {self.name_b}: {values}; B - A per seed "
                f"{diffs} (± two standard errors over the questions)")


def compare_runs(name_a: str, a: Sequence[ExampleLosses], name_b: str, b: Sequence[ExampleLosses],
                 metric: str = "answer loss") -> RunComparison:
    return RunComparison(name_a, name_b, tuple(a), tuple(b), metric)


@dataclass(frozen=True)
class PairedAccuracy:
    """Two models scored on the same questions."""

    name_a: str
    name_b: str
    both: int  # right for both
    only_a: int
    only_b: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def difference(self) -> float:
        """accuracy A - accuracy B."""
        return (self.only_a - self.only_b) / self.n

    @property
    def p_value(self) -> float:
        """Exact McNemar test, two-sided: how often chance alone splits the disagreements this unevenly.

        Questions both models get right (or both wrong) say nothing about which is
        better; if the two were equally accurate, each question only one of them
        gets right would be a fair coin's toss between them. So the p-value is
        the binomial tail of the smaller count among `only_a + only_b` fair tosses,
        doubled: exact however few the disagreements (a normal approximation
        calls 4 against 0 a difference; the exact test gives p = 0.125).
        """
        disagreements = self.only_a + self.only_b
        if disagreements == 0:
            return 1.0
        tail = sum(math.comb(disagreements, k) for k in range(min(self.only_a, self.only_b) + 1))
        return min(1.0, 2 * tail / 2 ** disagreements)

    @property
    def detected(self) -> bool:
        """A difference at the 5% level of the exact McNemar test."""
        return self.p_value < ALPHA

    def sentence(self) -> str:
        counts = (f"on {self.n} questions, {self.only_a} right only for {self.name_a}, {self.only_b} only for "
                  f"{self.name_b}")
        test = f"exact McNemar test p = {self.p_value:.3g}"
        if self.detected:
            better = self.name_a if self.difference > 0 else self.name_b
            return f"{better} is more accurate by {abs(self.difference):.1%} ({test}): {counts}"
        return (f"no accuracy difference detected ({self.difference:+.1%}, {test}; inconclusive, not a sign "
                f"of equal accuracy): {counts}")


def paired_accuracy(name_a: str, report_a, name_b: str, report_b) -> PairedAccuracy:
    """Compare two `EvalReport`s of the same examples, question by question."""
    ids_a, ids_b = [r.id for r in report_a.results], [r.id for r in report_b.results]
    if ids_a != ids_b:
        raise ValueError("the two reports must score the same examples in the same order; "
                         f"got {len(ids_a)} and {len(ids_b)} examples (first ids {ids_a[:1]} and {ids_b[:1]}).")
    pairs = [(ra.correct, rb.correct) for ra, rb in zip(report_a.results, report_b.results)]
    return PairedAccuracy(name_a, name_b, both=sum(a and b for a, b in pairs), only_a=sum(a and not b for a, b in pairs),
                          only_b=sum(b and not a for a, b in pairs), neither=sum(not a and not b for a, b in pairs))
