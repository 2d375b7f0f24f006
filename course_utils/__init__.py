"""Support package for the LoRA and QLoRA course.

One module per concern; each lesson says which module it builds or uses:
hardware, course_plan, models, data, evaluate, linalg, lora, train, quant, memory,
choose, plots, checks.
"""

__version__ = "0.1.0"
