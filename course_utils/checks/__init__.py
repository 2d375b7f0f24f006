"""Self-checks for the exercises, one module per lesson (`lesson_08.py` holds lesson 08's).

Every exercise cell starts as a placeholder (`answer = ...`). Its check says
"not attempted yet" for the untouched placeholder, explains what is wrong for
a wrong answer, and confirms a right one. The checks return a `Feedback` so
the worked solutions can `assert check_...(answer).correct`. Notebooks import
them from here: `from course_utils.checks import check_nf4_codes`.
"""

from .core import CORRECT, NOT_ATTEMPTED, WRONG, Feedback, is_placeholder, run_check  # noqa: F401
from .lesson_01 import *  # noqa: F401,F403
from .lesson_02 import *  # noqa: F401,F403
from .lesson_03 import *  # noqa: F401,F403
from .lesson_04 import *  # noqa: F401,F403
from .lesson_05 import *  # noqa: F401,F403
from .lesson_06 import *  # noqa: F401,F403
from .lesson_07 import *  # noqa: F401,F403
from .lesson_08 import *  # noqa: F401,F403
from .lesson_09 import *  # noqa: F401,F403
from .lesson_10 import *  # noqa: F401,F403
from .lesson_11 import *  # noqa: F401,F403
