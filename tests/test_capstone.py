"""The capstone's recipe object, its output folders, and the 7B GPU benchmark's CPU-testable parts."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import capstone
from course_utils.capstone import QLoRARecipe
from course_utils.hardware import HardwareProfile
from course_utils.memory import T4, load_config, plan_memory, stored_bytes

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "qlora_7b_gpu.py"


def test_output_root_prefers_a_mounted_drive(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    drive = tmp_path / "MyDrive"
    assert capstone.output_root(drive) == tmp_path / "cache" / "capstone"  # not mounted: the course cache
    drive.mkdir()
    root = capstone.output_root(drive)
    assert root.is_dir() and root.is_relative_to(drive)


def test_run_folder_is_named_by_every_setting(tmp_path):
    recipe = QLoRARecipe()
    assert recipe.run_folder(tmp_path) == QLoRARecipe().run_folder(tmp_path)  # a re-run finds its folder
    assert recipe.run_folder(tmp_path).name.startswith("Qwen2.5-7B-Instruct-sql-r16-")
    for change in ({"steps": 151}, {"seq_len": 256}, {"optimizer": "adamw"}, {"seed": 1}):
        assert recipe.with_changes(**change).run_folder(tmp_path) != recipe.run_folder(tmp_path), change


def test_recipe_configs_carry_the_settings():
    recipe = QLoRARecipe(batch_size=2, grad_accum=4, seq_len=512, checkpoint_every=25)
    config = recipe.train_config()
    assert (config.batch_size, config.grad_accum, config.max_length) == (2, 4, 512)
    assert config.optimizer == "paged_adamw_8bit" and config.gradient_checkpointing
    assert recipe.effective_batch == 8
    lora = recipe.lora_config()
    assert lora.r == 16 and lora.lora_alpha == 32 and lora.target_modules == "all-linear"


def test_recipe_plan_is_the_planner_on_the_same_settings():
    recipe = QLoRARecipe()
    direct = plan_memory("qwen2.5-7b", "qlora", rank=16, batch=2, seq_len=512, gradient_checkpointing=True,
                         optimizer="paged_adamw_8bit", profile=T4, unquantized_dtype=torch.float32)
    assert recipe.plan(T4).total == direct.total  # a T4 keeps embeddings/norms in fp32 (prepare_for_training)
    assert recipe.plan(T4).settings.compute_dtype == torch.float16
    a100 = HardwareProfile("cuda", "A100", 39.4, (8, 0), native_bf16=True)
    assert recipe.plan(a100).settings.compute_dtype == torch.bfloat16
    assert recipe.plan(a100).settings.unquantized_dtype == torch.bfloat16
    assert recipe.plan(a100).total < recipe.plan(T4).total


@pytest.mark.parametrize("bad", [{"rank": 0}, {"rank": True}, {"rank": 1.5}, {"steps": 0}, {"batch_size": -1},
                                 {"checkpoint_every": 0}, {"lora_alpha": 0}, {"lora_alpha": float("nan")},
                                 {"lora_alpha": float("inf")}, {"learning_rate": float("nan")},
                                 {"learning_rate": -1.0}, {"eval_every": 0}, {"optimizer": "adam"}])
def test_bad_recipes_are_rejected(bad):
    with pytest.raises(ValueError):
        QLoRARecipe(**bad)


def test_available_ram_is_plausible():
    free = capstone.available_ram_bytes()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < free <= total


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("qlora_7b_gpu", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_exits_with_a_message_without_cuda():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(BENCHMARK)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 1
    assert "needs a CUDA GPU" in done.stderr and "nothing was measured" in done.stderr


def test_benchmark_builds_what_the_planner_counts():
    """The random NF4 build (on the CPU, tiny config) stores exactly the bytes the planner predicts and trains."""
    bench = _load_benchmark()
    config = load_config("smollm2-135m")
    model = bench.build_random_nf4_model(config, "cpu", torch.float32, double_quant=True)
    plan = plan_memory(config, "qlora", rank=16, device="cpu", compute_dtype=torch.float32)
    assert stored_bytes(model) == {"base_weights": plan.base_weights, "quant_constants": plan.quant_constants,
                                   "unquantized": plan.unquantized}
    model = bench.add_lora(model, rank=16)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == plan.trainable_params
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    cpu = HardwareProfile("cpu", "cpu", 16.0)
    losses, seconds = bench.train_steps(model, steps=2, batch=1, seq_len=16, grad_accum=2, profile=cpu,
                                        gradient_checkpointing=False)
    assert len(losses) == 2 == len(seconds) and torch.isfinite(torch.tensor(losses)).all()
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


def test_run_folder_changes_with_the_training_data(tmp_path, monkeypatch):
    from course_utils import data

    recipe = QLoRARecipe()
    before = recipe.run_folder(tmp_path)
    changed = tmp_path / "train.jsonl"
    changed.write_text(data.data_path("sql", "train").read_text() + "\n")
    monkeypatch.setattr(data, "data_path", lambda task, split, data_dir=None: changed)
    assert recipe.run_folder(tmp_path) != before
