"""Comparisons that can fail: a difference is claimed only when it exceeds its measured noise.

The course compares training choices (rank, target modules, QLoRA vs LoRA, NF4
vs FP4, learning rates) on short CPU runs. A single run per choice cannot tell a
real difference from the luck of one seed or one sample of test questions, so:

- `compare_seeds` takes the yardstick (held-out answer loss, lower is better)
  of each choice over 2-3 seeds. It claims a difference only when the two
  ranges do not overlap: every seed of one choice beat every seed of the other.
  Otherwise it says "no difference detected", with the gap and the spread.
- `paired_accuracy` compares two models' execution accuracy on the *same*
  questions: only the questions they disagree on carry information, and the
  standard error of the difference comes from those (a paired comparison),
  not from one accuracy's binomial error.

Both return objects whose `.sentence()` is what a notebook prints or puts in a
plot title, so the text states what was measured, never what was hoped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class SeedComparison:
    """The yardstick of choice A and choice B over seeds (lower is better)."""

    name_a: str
    name_b: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    metric: str = "answer loss"

    def __post_init__(self) -> None:
        if len(self.a) < 2 or len(self.b) < 2:
            raise ValueError(f"compare at least 2 seeds per choice (got {len(self.a)} and {len(self.b)}): "
                             "with one run per choice the noise is unknown.")
        if not all(math.isfinite(v) for v in self.a + self.b):
            raise ValueError(f"every value must be finite, got {self.a} and {self.b}.")

    @property
    def mean_a(self) -> float:
        return sum(self.a) / len(self.a)

    @property
    def mean_b(self) -> float:
        return sum(self.b) / len(self.b)

    @property
    def gap(self) -> float:
        """mean B - mean A: positive when A is lower (better)."""
        return self.mean_b - self.mean_a

    @property
    def spread(self) -> float:
        """The largest seed-to-seed range within one choice: the noise a difference must beat."""
        return max(max(self.a) - min(self.a), max(self.b) - min(self.b))

    @property
    def winner(self) -> str | None:
        """The choice whose every seed beat every seed of the other, or None."""
        if max(self.a) < min(self.b):
            return self.name_a
        if max(self.b) < min(self.a):
            return self.name_b
        return None

    @property
    def detected(self) -> bool:
        return self.winner is not None

    def sentence(self) -> str:
        low, high = (self.name_a, self.name_b) if self.gap > 0 else (self.name_b, self.name_a)
        values = (f"{self.metric} {self.mean_a:.3f} ({self.name_a}) vs {self.mean_b:.3f} ({self.name_b}), "
                  f"{len(self.a)} and {len(self.b)} seeds")
        if self.detected:
            return (f"{self.winner} is better: {values}; every seed of {self.winner} beat every seed of the other, "
                    f"gap {abs(self.gap):.3f} vs seed spread {self.spread:.3f}")
        return (f"no difference detected between {low} and {high}: {values}; the gap {abs(self.gap):.3f} is within "
                f"the seed spread {self.spread:.3f}")


def compare_seeds(name_a: str, a: Sequence[float], name_b: str, b: Sequence[float],
                  metric: str = "answer loss") -> SeedComparison:
    return SeedComparison(name_a, name_b, tuple(float(v) for v in a), tuple(float(v) for v in b), metric)


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
    def standard_error(self) -> float:
        """Of the paired difference: sqrt of the discordant share, corrected for the difference, over sqrt(n)."""
        discordant = (self.only_a + self.only_b) / self.n
        return math.sqrt(max(discordant - self.difference ** 2, 0.0) / self.n)

    @property
    def detected(self) -> bool:
        """|difference| beyond two standard errors (and at least one discordant question)."""
        return self.only_a + self.only_b > 0 and abs(self.difference) > 2 * self.standard_error

    def sentence(self) -> str:
        counts = (f"on {self.n} questions, {self.only_a} right only for {self.name_a}, {self.only_b} only for "
                  f"{self.name_b}")
        if self.detected:
            better = self.name_a if self.difference > 0 else self.name_b
            return (f"{better} is more accurate by {abs(self.difference):.1%} (paired standard error "
                    f"{self.standard_error:.1%}): {counts}")
        return (f"no accuracy difference detected ({self.difference:+.1%}, paired standard error "
                f"{self.standard_error:.1%}): {counts}")


def paired_accuracy(name_a: str, report_a, name_b: str, report_b) -> PairedAccuracy:
    """Compare two `EvalReport`s of the same examples, question by question."""
    ids_a, ids_b = [r.id for r in report_a.results], [r.id for r in report_b.results]
    if ids_a != ids_b:
        raise ValueError("the two reports must score the same examples in the same order; "
                         f"got {len(ids_a)} and {len(ids_b)} examples (first ids {ids_a[:1]} and {ids_b[:1]}).")
    pairs = [(ra.correct, rb.correct) for ra, rb in zip(report_a.results, report_b.results)]
    return PairedAccuracy(name_a, name_b, both=sum(a and b for a, b in pairs), only_a=sum(a and not b for a, b in pairs),
                          only_b=sum(b and not a for a, b in pairs), neither=sum(not a and not b for a, b in pairs))
