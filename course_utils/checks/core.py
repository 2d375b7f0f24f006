"""Self-checks for the exercises: the shared machinery.

Every exercise cell starts as a placeholder (`answer = ...`). Its check says
"not attempted yet" for the untouched placeholder, explains what is wrong for
a wrong answer, and confirms a right one. The checks return a `Feedback` so
the worked solutions can `assert check_...(answer).correct`.

This module holds the shared machinery; each lesson's checks live in
`course_utils/checks/lesson_NN.py`, and `from course_utils.checks import ...`
finds them all.
"""

from __future__ import annotations

import math as _math
from dataclasses import dataclass
from typing import Any, Callable

import torch as _torch

NOT_ATTEMPTED = "not attempted"
WRONG = "wrong"
CORRECT = "correct"


@dataclass(frozen=True)
class Feedback:
    exercise: str
    status: str  # NOT_ATTEMPTED, WRONG or CORRECT
    message: str

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        mark = {NOT_ATTEMPTED: "[ ]", WRONG: "[x]", CORRECT: "[ok]"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"


def is_placeholder(answer: Any) -> bool:
    """The untouched exercise placeholder is `...` (Ellipsis) or None."""
    return answer is Ellipsis or answer is None


def run_check(exercise: str, answer: Any, find_problem: Callable[[Any], str | None],
              success: str | Callable[[], str] = "correct, well done.", quiet: bool = False) -> Feedback:
    """Judge `answer` with `find_problem`, which returns None or what is wrong.

    An exception inside `find_problem` (an answer of the wrong type, say) is
    reported as a wrong answer with the exception's text, not raised. `success`
    may be a function, called after `find_problem`: an experiment's check says
    what was observed, which only `find_problem` has measured.
    """
    if is_placeholder(answer):
        feedback = Feedback(exercise, NOT_ATTEMPTED, "not attempted yet: replace the `...` with your answer and re-run.")
    else:
        try:
            problem = find_problem(answer)
        except Exception as exc:  # the learner's answer may be anything
            problem = f"could not check this answer ({type(exc).__name__}: {exc})."
        feedback = (Feedback(exercise, WRONG, problem) if problem else
                    Feedback(exercise, CORRECT, success() if callable(success) else success))
    if not quiet:
        print(feedback)
    return feedback


# Reading answers: a learner may type a number, a tensor or a list.

def _as_number(answer: Any) -> float:
    if _torch.is_tensor(answer):
        if answer.numel() != 1:
            raise ValueError(f"expected one number, got a tensor of shape {tuple(answer.shape)}")
        return float(answer.detach().item())
    return float(answer)


def _as_count(answer: Any) -> int:
    value = _as_number(answer)
    if value != int(value):
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return _math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _q_tensor(answer: Any) -> _torch.Tensor:
    if isinstance(answer, (list, tuple)) or _torch.is_tensor(answer):
        return _torch.as_tensor(answer).detach().cpu().reshape(-1)
    raise ValueError(f"expected a tensor or a list of numbers, got {type(answer).__name__}")


def _linear_shapes(model: Any, target_modules: Any) -> list[tuple[str, int, int]]:
    """(name, in, out) of every nn.Linear whose name ends in a target (LoRA-wrapped or not)."""
    shapes = []
    for name, module in model.named_modules():
        if not isinstance(module, _torch.nn.Linear):
            continue
        name = name.removesuffix(".base_layer")
        if any(name == t or name.endswith("." + t) for t in target_modules):
            shapes.append((name, module.in_features, module.out_features))
    return shapes


_q_number = _as_number  # lessons 06-08 read numbers the same way


def fraction_slip(value: float, expected: float, complement: str, rel_tol: float = 1e-3) -> str | None:
    """The feedback for a fraction answer: "" when right, a hint for its two usual slips, None otherwise.

    A share asked "as a fraction" is often given as a percentage, or as the
    other part of the whole; both deserve a sentence rather than "wrong".
    `complement` says what 1 - expected is in the exercise's words.
    """
    if _math.isclose(value, expected, rel_tol=rel_tol):
        return ""
    if _math.isclose(value, 100 * expected, rel_tol=rel_tol):
        return "that is a percentage; give a fraction between 0 and 1."
    if _math.isclose(value, 1 - expected, rel_tol=rel_tol):
        return complement
    return None
