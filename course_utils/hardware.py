"""What machine are we on, and what should the course do on it?

Every notebook starts by printing a `HardwareProfile`, so a learner always
knows which device, compute dtype and amount of work the lesson chose. The
choice of dtype matters for QLoRA: a T4 has no native bf16 (PyTorch may still
say "supported" through slow emulation), so it computes in fp16; Ampere and
newer GPUs compute in bf16; a CPU computes in fp32, which every CPU has hardware
for (bf16 only some; on the CI machine, which has it, bf16 steps are faster:
benchmarks/cpu_autocast.py), so a CPU lesson is the same computation everywhere.
"""

from __future__ import annotations

import os
import math
import numbers
import operator
import platform
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")

GIB = 1024**3


@dataclass(frozen=True)
class HardwareProfile:
    """A summary of the accelerator the course will use."""

    kind: str  # "cpu", "cuda" or "mps"
    name: str
    memory_gib: float  # GPU memory, or system RAM for the CPU/MPS
    compute_capability: tuple[int, int] | None = None
    native_bf16: bool = False
    cpu_count: int = 1

    def __post_init__(self) -> None:
        # Checked here, so that a bad value fails with its name instead of deep in a plan (a memory_gib of
        # "16" once built a 2 GiB string in plan.verdict before failing).
        if self.kind not in ("cpu", "cuda", "mps"):
            raise ValueError(f"kind must be 'cpu', 'cuda' or 'mps', got {self.kind!r}.")
        memory = self.memory_gib
        if isinstance(memory, bool) or not isinstance(memory, numbers.Real) or not math.isfinite(memory) or memory < 0:
            raise ValueError(f"memory_gib must be a number of GiB, 0 or more (0: not known), got {memory!r} "
                             "(a T4 has 14.74).")
        if isinstance(self.cpu_count, bool) or not hasattr(self.cpu_count, "__index__") or operator.index(self.cpu_count) < 1:
            raise ValueError(f"cpu_count must be a whole number of cores, 1 or more, got {self.cpu_count!r}.")

    @property
    def device(self) -> str:
        return "cuda" if self.kind == "cuda" else self.kind

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype for matmuls (and QLoRA's 4-bit dequantization)."""
        return choose_compute_dtype(self)

    @property
    def quick(self) -> bool:
        """True where lessons should use their small, CI-sized settings."""
        return not self.is_gpu or os.environ.get("COURSE_QUICK") == "1"

    def result_key(self) -> dict[str, str]:
        """What a cached result computed here must be keyed by, besides its settings.

        A GPU trains in fp16 or bf16 and a CPU in fp32, so their adapters and scores
        differ: a GPU's results are keyed by device and compute dtype, and
        `make gpu-check` never reads a CPU-trained adapter as its own. A CPU's key
        is empty, so the caches CPU runs have already filled stay valid.
        """
        if self.kind == "cpu":
            return {}
        return {"device": self.kind, "compute_dtype": str(self.compute_dtype).removeprefix("torch.")}

    def pick(self, *, cpu: T, gpu: T) -> T:
        """Choose a setting by hardware: `steps = profile.pick(cpu=40, gpu=400)`."""
        return cpu if self.quick else gpu

    def summary(self) -> str:
        lines = [
            f"device           : {self.kind} ({self.name})",
            f"memory           : {self.memory_gib:.1f} GiB",
        ]
        if self.compute_capability is not None:
            major, minor = self.compute_capability
            lines.append(f"compute capability: {major}.{minor}")
            lines.append(f"native bf16      : {self.native_bf16}")
        lines.append(f"compute dtype    : {str(self.compute_dtype).removeprefix('torch.')}")
        lines.append(f"lesson settings  : {'quick (CPU/CI sizes)' if self.quick else 'full (GPU sizes)'}")
        return "\n".join(lines)

    def __str__(self) -> str:  # print(profile) reads well in a notebook
        return self.summary()


# Example GPUs for planning without one. memory_gib is what PyTorch reports as
# total memory (a "16 GB" T4 shows 14.7 GiB; a "40 GB" A100 39.4 GiB).
T4 = HardwareProfile("cuda", "Tesla T4 (example)", 14.74, (7, 5), native_bf16=False)
A100_40GB = HardwareProfile("cuda", "A100-SXM4-40GB (example)", 39.39, (8, 0), native_bf16=True)
A100_80GB = HardwareProfile("cuda", "A100-SXM4-80GB (example)", 79.15, (8, 0), native_bf16=True)
EXAMPLE_PROFILES = {"t4": T4, "a100-40gb": A100_40GB, "a100-80gb": A100_80GB}


def choose_compute_dtype(profile: HardwareProfile) -> torch.dtype:
    """fp32 on CPU/MPS, bf16 on GPUs with native bf16 (Ampere+), else fp16."""
    if profile.kind != "cuda":
        return torch.float32
    return torch.bfloat16 if profile.native_bf16 else torch.float16


def _system_ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def profile_from_cuda_properties(props: Any, native_bf16: bool) -> HardwareProfile:
    """Build a profile from `torch.cuda.get_device_properties` output.

    Split out so tests can pass fake properties for a T4 or an A100.
    """
    return HardwareProfile(
        kind="cuda",
        name=props.name,
        memory_gib=props.total_memory / GIB,
        compute_capability=(props.major, props.minor),
        native_bf16=native_bf16,
        cpu_count=os.cpu_count() or 1,
    )


def detect() -> HardwareProfile:
    """Detect CUDA, then Apple MPS, then fall back to the CPU."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return profile_from_cuda_properties(props, native)
    cpus = os.cpu_count() or 1
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return HardwareProfile("mps", f"Apple {platform.machine()}", _system_ram_gib(), cpu_count=cpus)
    return HardwareProfile("cpu", platform.processor() or platform.machine(), _system_ram_gib(), cpu_count=cpus)


def bitsandbytes_status() -> tuple[bool, str]:
    """Whether bitsandbytes imports here, and a sentence saying why not."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # a broken CUDA build raises more than ImportError
        return False, (
            f"bitsandbytes cannot be imported ({type(exc).__name__}: {exc}). "
            "Install it with `pip install bitsandbytes` (0.46 or newer, the course's floor, runs on CPU and CUDA)."
        )
    return True, "bitsandbytes is available"


# ---------------------------------------------------------------------------
# Versions: what is installed vs the ranges the course is tested with
# ---------------------------------------------------------------------------

# The versions CI ran the course with, shown next to the installed ones by lesson 00 (update when CI
# moves on). Only for reading: whether an install is supported is decided by pyproject's ranges
# (`VersionCheck.ok`), so a newer release that CI picks up within the ranges breaks nothing here.
# tests/test_versions.py fails when the installed release series (major.minor) differs from these.
TESTED_VERSIONS = {
    "torch": "2.13.0", "transformers": "5.25.0", "peft": "0.22.0", "bitsandbytes": "0.50.2",
    "accelerate": "1.16.0", "datasets": "5.2.0", "matplotlib": "3.11.2",
}


@dataclass(frozen=True)
class VersionCheck:
    package: str
    installed: str | None
    required: str  # the range from pyproject.toml
    tested: str

    @property
    def ok(self) -> bool:
        return self.installed is not None and _satisfies(self.installed, self.required)


def _satisfies(version: str, specifier: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version.split("+")[0]) in SpecifierSet(specifier)


def required_ranges() -> dict[str, str]:
    """The dependency ranges declared in pyproject.toml (read from the installed metadata)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        lines = requires("course_utils") or []
    except PackageNotFoundError:
        return {}
    ranges = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is None:
            ranges[req.name.lower()] = str(req.specifier)
    return ranges


def check_versions() -> list[VersionCheck]:
    """One row per key package: installed version, required range, tested version."""
    from importlib.metadata import PackageNotFoundError, version

    ranges = required_ranges()
    rows = []
    for package, tested in TESTED_VERSIONS.items():
        try:
            installed: str | None = version(package)
        except PackageNotFoundError:
            installed = None
        rows.append(VersionCheck(package, installed, ranges.get(package, ""), tested))
    return rows
