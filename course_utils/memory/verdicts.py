"""Does a plan fit a device, and if not, which single change would make it fit?

`course_utils.memory.plan` imports this module (`MemoryPlan.verdict`); this one
imports nothing from it, so the two form no import circle. A plan is used
here only through its `settings`, `total`, `fits` and `replan`; the annotations
name `MemoryPlan` as a string that is never evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..hardware import GIB, HardwareProfile
from .layout import ALL_LINEAR_TARGETS


@dataclass(frozen=True)
class Suggestion:
    change: str  # in words
    settings: dict[str, Any]  # keyword arguments for plan.replan
    total: int
    fits: bool


@dataclass(frozen=True)
class Verdict:
    """Whether a plan fits a device, and which changes would make it fit."""

    fits: bool
    plan: "MemoryPlan"  # noqa: F821 (see the module docstring)
    available: int  # bytes on the device
    suggestions: tuple[Suggestion, ...]  # each change alone, largest saving first
    recipe: Suggestion | None  # cheap changes combined, in order, until it fits (None: nothing needed or nothing works)

    @property
    def headroom(self) -> int:
        return self.available - self.plan.total

    def __str__(self) -> str:
        need, have = self.plan.total / GIB, self.available / GIB
        if self.fits:
            return f"fits: needs {need:.2f} GiB of {have:.2f} GiB ({self.headroom / GIB:.2f} GiB to spare)."
        lines = [f"does not fit: needs {need:.2f} GiB, the device has {have:.2f} GiB. Each change alone:"]
        for s in self.suggestions:
            lines.append(f"  - {s.change}: {s.total / GIB:.2f} GiB{' (fits)' if s.fits else ''}")
        if self.recipe is not None and self.recipe.fits:
            lines.append(f"Together: {self.recipe.change} -> {self.recipe.total / GIB:.2f} GiB, fits.")
        else:
            lines.append("Even all of these together do not fit: choose a smaller model.")
        return "\n".join(lines)


def verdict(plan: "MemoryPlan", profile: HardwareProfile) -> Verdict:  # noqa: F821
    """Judge `plan` on `profile`'s device; if it does not fit, say what would.

    The plan is first re-made with the profile's device and compute dtype (a T4
    computes in fp16, a CPU in fp32). Candidate changes, in order of
    preference (the first ones do not change what the model learns):
    gradient checkpointing, batch 1 with gradient accumulation, a paged 8-bit
    optimizer, QLoRA, shorter sequences, rank 8. Each is tried alone; the
    recipe adds them in that order until the plan fits, then drops any that
    turned out unnecessary. If all of them together still do not fit, the
    model is too big for the device.
    """
    if (plan.settings.device, plan.settings.compute_dtype) != (profile.device, profile.compute_dtype):
        plan = plan.replan(device=profile.device, compute_dtype=profile.compute_dtype)
    available = int(profile.memory_gib * GIB)
    if plan.fits(available):
        return Verdict(True, plan, available, (), None)
    s = plan.settings
    # In order of preference: changes that leave the training result alone come first.
    steps: list[tuple[str, dict]] = []
    if not s.gradient_checkpointing:
        steps.append(("turn on gradient checkpointing", {"gradient_checkpointing": True}))
    if s.batch > 1:
        steps.append((f"batch 1 (gradient accumulation {s.batch} keeps the effective batch)", {"batch": 1}))
    if s.optimizer in ("adamw_torch", "paged_adamw_32bit"):
        steps.append(("use optimizer='paged_adamw_8bit'", {"optimizer": "paged_adamw_8bit"}))
    if s.method != "qlora":
        steps.append(("switch to QLoRA (nf4 + DQ base)",
                      {"method": "qlora", "targets": s.targets or ALL_LINEAR_TARGETS}))
    if s.seq_len > 128:
        shorter = max(128, s.seq_len // 4)
        steps.append((f"shorter sequences (seq_len={shorter})", {"seq_len": shorter}))
    if s.method != "full" and s.rank > 8:
        steps.append(("smaller rank (8)", {"rank": 8}))
    alone = []
    for change, kwargs in steps:
        total = plan.replan(**kwargs).total
        alone.append(Suggestion(change, kwargs, total, total <= available))
    alone.sort(key=lambda sug: sug.total)

    def combine(chosen: list[tuple[str, dict]]) -> Suggestion:
        settings = {k: v for _, kwargs in chosen for k, v in kwargs.items()}
        total = plan.replan(**settings).total
        return Suggestion(" + ".join(change for change, _ in chosen), settings, total, total <= available)

    chosen: list[tuple[str, dict]] = []
    recipe = None
    for step in steps:  # add changes in order of preference until it fits ...
        chosen.append(step)
        recipe = combine(chosen)
        if recipe.fits:
            break
    if recipe is not None and recipe.fits:  # ... then drop any that turned out not to be needed
        for step in reversed(list(chosen)):  # least preferred first
            fewer = [other for other in chosen if other is not step]
            if fewer and combine(fewer).fits:
                chosen = fewer
        recipe = combine(chosen)
    return Verdict(False, plan, available, tuple(alone), recipe)
