"""Self-checks for the exercises.

Every exercise cell starts as a placeholder (`answer = ...`). Its check says
"not attempted yet" for the untouched placeholder, explains what is wrong for
a wrong answer, and confirms a right one. The checks return a `Feedback` so
the worked solutions can `assert check_...(answer).correct`.

Lesson-specific checks live below the shared machinery, grouped by lesson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
              success: str = "correct, well done.", quiet: bool = False) -> Feedback:
    """Judge `answer` with `find_problem`, which returns None or what is wrong.

    An exception inside `find_problem` (an answer of the wrong type, say) is
    reported as a wrong answer with the exception's text, not raised.
    """
    if is_placeholder(answer):
        feedback = Feedback(exercise, NOT_ATTEMPTED, "not attempted yet: replace the `...` with your answer and re-run.")
    else:
        try:
            problem = find_problem(answer)
        except Exception as exc:  # the learner's answer may be anything
            problem = f"could not check this answer ({type(exc).__name__}: {exc})."
        feedback = Feedback(exercise, WRONG, problem) if problem else Feedback(exercise, CORRECT, success)
    if not quiet:
        print(feedback)
    return feedback
