"""Full fine-tuning, LoRA or QLoRA? A decision helper driven by the memory planner.

`recommend(model, device)` answers the first question of every fine-tuning
project, "what can I train on this machine?", before anything is downloaded.
It asks `course_utils.memory.plan_memory` for the memory of each method and
takes the first that fits, in the order of least compromise:

1. full fine-tuning: every weight trains, nothing is approximated, but it
   needs about 16 bytes per parameter before activations;
2. LoRA on a 16-bit base: the base is frozen, only r (d + k) parameters per
   targeted matrix train, the base still needs 2 bytes per parameter;
3. QLoRA: LoRA on an NF4 + double-quantized base, about 0.52 bytes per
   parameter for the decoder's weights, computing in 16 bits.

For each method it tries the cheap changes that keep the recipe intact, one
after the other: a paged 8-bit optimizer (GPU only), gradient checkpointing,
then halving the micro-batch (gradient accumulation keeps the effective batch).
Only `headroom` of the device memory is counted as usable, because the
allocator fragments and the desktop, the notebook and other processes take
their share.

The answer is a `Recommendation`: the method, its settings, the memory it
needs, and a sentence saying why. When even QLoRA at batch 1 does not fit, the
method is "does not fit" and the reason says how much memory is missing.

For serving, `serving_bytes` compares one base plus N adapters with N merged
copies, and `fastest_modes` reads timings of serving modes against their own
noise (lesson 11 times mixed-adapter batches, set_adapter and merged copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .hardware import GIB, HardwareProfile
from .memory import MemoryPlan, load_config, plan_memory

METHOD_ORDER = ("full", "lora", "qlora")
DOES_NOT_FIT = "does not fit"
DEFAULT_HEADROOM = 0.9
# Above this many parameters a CPU fine-tune is too slow to be practical, even when it fits in RAM.
CPU_PRACTICAL_PARAMS = 1.0e9


@dataclass(frozen=True)
class Recommendation:
    """What to train on a device, with the settings the planner checked."""

    model: str
    device: str  # the profile's name
    method: str  # "full", "lora", "qlora" or "does not fit"
    rank: int | None  # None for full fine-tuning
    targets: str | None
    batch: int  # micro-batch size
    grad_accum: int  # micro-batches per optimizer step, so batch x grad_accum = the batch asked for
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    need_gib: float  # the plan's total (for "does not fit": the smallest plan tried)
    usable_gib: float  # headroom x device memory
    reason: str
    plan: MemoryPlan | None = None

    @property
    def fits(self) -> bool:
        return self.method != DOES_NOT_FIT

    def settings_text(self) -> str:
        """The settings in a few words, for a table cell."""
        if not self.fits:
            return "-"
        parts = [] if self.rank is None else [f"r={self.rank} {self.targets}"]
        parts.append(f"batch {self.batch}x{self.grad_accum}")
        if self.gradient_checkpointing:
            parts.append("ckpt")
        if self.optimizer != "adamw_torch":
            parts.append(self.optimizer.replace("paged_adamw_8bit", "paged 8-bit"))
        return ", ".join(parts)


def as_profile(device: HardwareProfile | float | int) -> HardwareProfile:
    """A HardwareProfile, or a number of GiB read as a CUDA GPU with native bf16."""
    if isinstance(device, HardwareProfile):
        return device
    if isinstance(device, bool) or not isinstance(device, (int, float)) or device <= 0:
        raise ValueError(
            f"device must be a HardwareProfile (e.g. course_utils.hardware.detect()) or a positive number of "
            f"GiB of GPU memory, got {device!r}."
        )
    return HardwareProfile("cuda", f"GPU with {device:g} GiB", float(device), (8, 0), native_bf16=True)


def _candidates(profile: HardwareProfile, method: str, batch: int) -> list[dict[str, Any]]:
    """The settings to try for one method, least compromise first."""
    optimizers = ["adamw_torch"] + (["paged_adamw_8bit"] if profile.is_gpu else [])
    batches = []
    b = batch
    while b >= 1:
        batches.append(b)
        b //= 2
    if batches[-1] != 1:
        batches.append(1)
    out = []
    for b in batches:
        for checkpointing in (False, True):
            for optimizer in optimizers:
                out.append({"batch": b, "gradient_checkpointing": checkpointing, "optimizer": optimizer})
    return out


def _method_reason(method: str, profile: HardwareProfile, params: float) -> str:
    billions = params / 1e9
    if method == "full":
        why = (f"full fine-tuning fits: all {billions:.2f} B parameters can train with AdamW state, "
               "the most flexible option (LoRA still gives smaller files to ship)")
    elif method == "lora":
        why = ("full fine-tuning does not fit (about 16 bytes per parameter before activations); "
               "LoRA on an unquantized base does, and keeps the base exact")
    else:
        dtype = str(profile.compute_dtype).removeprefix("torch.")
        why = ("a 16-bit base does not fit; QLoRA does: NF4 + double quantization stores the base "
               f"in about 4.13 bits per weight, dequantized to {dtype} for every matmul")
    if profile.kind == "cpu" and params > CPU_PRACTICAL_PARAMS:
        why += f"; it fits in RAM, but a CPU step on a {billions:.1f} B model takes minutes: use a GPU"
    return why


def recommend(model: Any, device: HardwareProfile | float | int, *, batch: int = 8, seq_len: int = 512,
              rank: int = 16, targets: str = "all-linear", headroom: float = DEFAULT_HEADROOM,
              methods: Sequence[str] = METHOD_ORDER, name: str | None = None) -> Recommendation:
    """Recommend full FT, LoRA or QLoRA for `model` on `device`, with settings that fit.

    model: anything `memory.load_config` accepts ("qwen2.5-7b", "llama-70b", a config...).
    device: a HardwareProfile (real, or a fake one for a T4/A100), or GiB of a GPU.
    batch, seq_len: the micro-batch you would like; it is halved (with gradient
        accumulation making up the difference) only if nothing else fits.
    rank, targets: the LoRA settings for the LoRA and QLoRA plans (QLoRA paper:
        all linear layers).
    headroom: the share of device memory the plan may use (allocator
        fragmentation, other processes).
    methods: which methods to consider, in order of preference (leave "full"
        out when you want small adapter files anyway).
    """
    profile = as_profile(device)
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom is the usable share of memory, in (0, 1] (try 0.9), got {headroom}.")
    unknown = [m for m in methods if m not in METHOD_ORDER]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty selection of {METHOD_ORDER}, got {tuple(methods)}.")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    config = load_config(model)
    label = name or (model if isinstance(model, str) else getattr(config, "_name_or_path", "") or config.model_type)
    usable = headroom * profile.memory_gib * GIB
    smallest: MemoryPlan | None = None
    for method in methods:
        for settings in _candidates(profile, method, batch):
            plan = plan_memory(config, method, rank=rank, targets=targets, seq_len=seq_len, profile=profile,
                               name=label, **settings)
            if smallest is None or plan.total < smallest.total:
                smallest = plan
            if plan.total <= usable:
                reason = _method_reason(method, profile, plan.total_params)
                if settings["batch"] < batch:
                    reason += f"; micro-batch {settings['batch']} with {batch // settings['batch']} accumulation steps"
                return Recommendation(
                    model=label, device=profile.name, method=method,
                    rank=None if method == "full" else rank, targets=None if method == "full" else targets,
                    batch=settings["batch"], grad_accum=max(1, batch // settings["batch"]), seq_len=seq_len,
                    gradient_checkpointing=settings["gradient_checkpointing"], optimizer=settings["optimizer"],
                    need_gib=plan.total / GIB, usable_gib=usable / GIB, reason=reason, plan=plan)
    assert smallest is not None
    missing = (smallest.total - usable) / GIB
    reason = (f"even the smallest plan ({smallest.settings.describe()}) needs {smallest.total / GIB:.1f} GiB, "
              f"{missing:.1f} GiB more than the {usable / GIB:.1f} GiB usable here: use a bigger device, "
              "shorter sequences, or a smaller model")
    return Recommendation(model=label, device=profile.name, method=DOES_NOT_FIT, rank=None, targets=None,
                          batch=1, grad_accum=batch, seq_len=seq_len, gradient_checkpointing=True,
                          optimizer=smallest.settings.optimizer, need_gib=smallest.total / GIB,
                          usable_gib=usable / GIB, reason=reason, plan=smallest)


def decision_table(models: Iterable[Any], devices: Iterable[HardwareProfile], **kwargs) -> list[Recommendation]:
    """`recommend` for every (model, device) pair, models in the outer loop."""
    devices = list(devices)
    return [recommend(model, device, **kwargs) for model in models for device in devices]


def format_decision_table(recommendations: Sequence[Recommendation]) -> str:
    """A text table: one row per model, one column per device, method and GiB in each cell."""
    models = list(dict.fromkeys(r.model for r in recommendations))
    devices = list(dict.fromkeys(r.device for r in recommendations))
    cell = {(r.model, r.device): f"{r.method} ({r.need_gib:.1f} GiB)" for r in recommendations}
    width = max([len(c) for c in cell.values()] + [len(d) for d in devices]) + 2
    first = max(len(m) for m in models) + 2
    lines = ["model".ljust(first) + "".join(d.ljust(width) for d in devices)]
    for m in models:
        lines.append(m.ljust(first) + "".join(cell.get((m, d), "").ljust(width) for d in devices))
    return "\n".join(lines)


# --------------------------------------------------------------------------- serving

def serving_bytes(model: Any, n_adapters: int, *, rank: int = 16, targets: str = "all-linear",
                  dtype: str = "bf16") -> dict[str, int]:
    """Memory of serving `n_adapters` fine-tunes: one base plus N adapters vs N merged copies.

    Weights only (no KV cache, no activations): the base in `dtype`, each
    adapter's A and B in fp32 as PEFT keeps them. Merging removes the adapter
    but makes each fine-tune a full copy of the model.
    """
    if isinstance(n_adapters, bool) or not isinstance(n_adapters, int) or n_adapters < 1:
        raise ValueError(f"n_adapters must be a positive integer, got {n_adapters!r}.")
    plan = plan_memory(model, "lora", rank=rank, targets=targets, batch=1, seq_len=1, device="cpu",
                       compute_dtype=dtype)
    return {"base": plan.model_bytes, "adapter": plan.adapters,
            "hot_swap": plan.model_bytes + n_adapters * plan.adapters,
            "merged_copies": n_adapters * plan.model_bytes}


def fastest_modes(seconds: dict[str, Sequence[float]]) -> tuple[list[str], float]:
    """Which serving mode was fastest, judged against the timing's own noise.

    `seconds` maps each mode to its wall times, two or more repeats of the same
    requests. A mode's time is its best repeat (the least disturbed by other
    work on the machine); the noise is the largest relative spread between the
    repeats of any one mode. Returns the modes whose best time is within that
    noise of the fastest one (the fastest first: one name when it is clearly
    fastest, several when they are tied), and the noise.
    """
    if not seconds or any(len(times) < 2 for times in seconds.values()):
        raise ValueError("time every mode at least twice (repeats), so the timing's noise can be measured.")
    if any(not t > 0 for times in seconds.values() for t in times):
        raise ValueError("every time must be a positive number of seconds.")
    best = {mode: min(times) for mode, times in seconds.items()}
    noise = max((max(times) - min(times)) / min(times) for times in seconds.values())
    order = sorted(best, key=best.get)
    return [mode for mode in order if best[mode] <= best[order[0]] * (1 + noise)], noise
