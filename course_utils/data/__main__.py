"""`python -m course_utils.data`: rewrite data/ from the generators."""

from .generate import main

main()
