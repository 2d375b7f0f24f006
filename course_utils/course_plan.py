"""What each lesson will do on this hardware, in words (lesson 00).

It reads the hardware profile and the capstone's memory plan, which is why it
sits above both: `hardware` knows nothing of the planner or the recipe.
"""

from __future__ import annotations

from .capstone import QLoRARecipe
from .hardware import GIB, HardwareProfile, bitsandbytes_status


def lesson_plan(profile: HardwareProfile) -> list[tuple[str, str]]:
    """What each part of the course will do on this hardware, in words."""
    dtype = str(profile.compute_dtype).removeprefix("torch.")
    size = "full (GPU) sizes" if not profile.quick else "quick sizes (fewer steps and examples)"
    bnb_ok, _ = bitsandbytes_status()
    four_bit = f"NF4 + double quantization, compute in {dtype}" if bnb_ok else "unavailable: install bitsandbytes"
    if profile.is_gpu:  # the capstone's own decision (lesson 10): does its recipe's memory plan fit this GPU?
        recipe = QLoRARecipe()
        plan = recipe.plan(profile)
        need = f"{plan.total / GIB:.1f} GiB planned of {profile.memory_gib:.1f}"
        capstone = (f"{recipe.model_id.split('/')[-1]} in NF4 + DQ ({need})" if plan.verdict(profile).fits else
                    f"the tiny SmolLM2-135M model with the same code (the 7B recipe: {need}; lesson 10 says "
                    "what would make it fit)")
    else:
        capstone = "the tiny SmolLM2-135M model with the same code (the 7B needs a CUDA GPU its memory plan fits)"
    return [
        ("01-03 rank, SVD, LoRA from scratch", f"{profile.kind}, {size}"),
        ("04-05 LoRA with PEFT, experiments", f"SmolLM2-135M, LoRA in {dtype}, {size}"),
        ("06-07 quantization, NF4", "real weights of SmolLM2-135M, bit-exact comparison with bitsandbytes"),
        ("08 QLoRA storage and compute", f"SmolLM2-135M, 4-bit: {four_bit}"),
        ("09 QLoRA training", f"SmolLM2-135M, QLoRA vs LoRA adapters, {size}"),
        ("10 capstone", capstone),
        ("11 choosing and serving", "memory planner for 135M to 70B models, adapters on the tiny model"),
    ]
