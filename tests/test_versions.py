"""pyproject's version ranges agree with what the installed libraries require, and TESTED_VERSIONS with what is installed.

CI installs the newest releases the ranges allow, so these tests read the installed
distributions' metadata (importlib.metadata) instead of copying version numbers:
a torch floor that falls behind what transformers, accelerate or PEFT need
(torch>=2.4 while transformers 5 disables torch below 2.6) lets pip pick a combination
that cannot work, and on Colab pip would replace the preinstalled CUDA torch to satisfy it.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from course_utils.hardware import TESTED_VERSIONS

ROOT = Path(__file__).resolve().parent.parent
# The course runs every library on its PyTorch backend, so requirements behind a `torch`
# extra apply too (transformers declares its torch>=2.6 there).
BACKEND_EXTRA = "torch"


def _name(name: str) -> str:
    return name.lower().replace("_", "-")


def declared() -> dict[str, Requirement]:
    """pyproject.toml's dependencies as written (not the installed course_utils metadata, which may be stale)."""
    lines = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_name(req.name): req for req in map(Requirement, lines)}


def floor(specifier: SpecifierSet) -> Version | None:
    """The lowest version a specifier admits, as far as its lower bounds say (None: no lower bound)."""
    bounds = [Version(spec.version) for spec in specifier if spec.operator in (">=", ">", "==", "~=", "===")]
    return max(bounds) if bounds else None


def installed_requirements() -> list[tuple[str, Requirement]]:
    """(installed distribution, one of its requirements on another course dependency) that applies here."""
    ours = declared()
    found = []
    for dist in ours:
        try:
            lines = requires(dist) or []
        except PackageNotFoundError:
            continue
        for req in map(Requirement, lines):
            if req.marker is not None and not req.marker.evaluate({"extra": BACKEND_EXTRA}):
                continue
            if _name(req.name) in ours and _name(req.name) != dist:
                found.append((dist, req))
    return found


def test_the_check_reads_the_requirements_of_transformers_accelerate_and_peft():
    """Guards the test below against passing vacuously (metadata not found, markers filtering everything)."""
    by_dist = {(dist, _name(req.name)) for dist, req in installed_requirements()}
    assert {("transformers", "torch"), ("accelerate", "torch"), ("peft", "accelerate")} <= by_dist


def test_the_torch_floor_is_at_least_what_the_installed_libraries_require():
    """Only torch: a torch floor below what transformers/accelerate/peft need makes pip replace Colab's CUDA torch.
    Other floors may stay below what the newest releases need (an older pandas runs on an older numpy): raising
    them to what CI happens to install would only narrow what a learner's machine may keep."""
    ours = declared()
    behind = []
    for dist, req in installed_requirements():
        if _name(req.name) != "torch":
            continue
        needed = floor(req.specifier)
        have = floor(ours[_name(req.name)].specifier)
        if needed is not None and (have is None or have < needed):
            behind.append(f"{dist} {version(dist)} requires {req.name}{req.specifier}, "
                          f"pyproject says {ours[_name(req.name)]}")
    assert not behind, "raise these floors in pyproject.toml:\n" + "\n".join(behind)


def test_floor_helper_reads_lower_bounds():
    assert floor(SpecifierSet(">=2.6,<3")) == Version("2.6")
    assert floor(SpecifierSet("<3")) is None
    assert floor(SpecifierSet(">=1.1,>=1.13")) == Version("1.13")


def test_transformers_is_capped_below_the_major_that_removes_what_the_course_calls():
    """transformers 5 deprecates `gradient_checkpointing_enable` (called by the course) for removal in v6."""
    import inspect

    from transformers import PreTrainedModel

    source = inspect.getsource(PreTrainedModel.gradient_checkpointing_enable)
    assert "removed in v6" in source  # the announcement the cap answers; drop the cap when the course stops calling it
    transformers = declared()["transformers"].specifier
    assert Version(version("transformers")) in transformers
    assert Version("6.0") not in transformers


@pytest.mark.parametrize("package", sorted(TESTED_VERSIONS))
def test_tested_versions_are_the_installed_release_series_and_within_the_ranges(package):
    """TESTED_VERSIONS names what CI installed, to the release series (major.minor).

    Lesson 00 only displays these next to the installed versions; its assert uses the
    ranges. CI installs the newest releases the ranges allow, so an exact comparison
    would fail CI on every upstream patch release; a new minor release is when CI has
    moved on and the table must follow.
    """
    tested = Version(TESTED_VERSIONS[package])
    installed = Version(version(package))  # a local label such as +cpu or +cu124 is not part of .release
    assert tested.release[:2] == installed.release[:2], (
        f"CI now installs {package} {installed}; TESTED_VERSIONS says {tested}: update course_utils/hardware.py")
    ranges = declared()
    if package in ranges:
        assert tested in ranges[package].specifier, f"{package} {tested} is outside pyproject's {ranges[package]}"
