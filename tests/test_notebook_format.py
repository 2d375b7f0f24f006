"""The stored notebooks stay clean, and the solutions stay in step with the lessons."""

import ast
import builtins
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
from sync_solutions import exercise_tag  # noqa: E402


def test_there_are_notebooks():
    assert any(p.name.startswith("00_") for p in NOTEBOOKS)


def test_notebooks_are_stored_without_outputs():
    dirty = []
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                dirty.append(path.name)
                break
    assert not dirty, f"strip outputs before committing: {dirty}"


def test_solutions_are_in_sync_with_lessons():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_solutions.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_exercise_has_a_placeholder_and_a_different_solution():
    for lesson in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = {exercise_tag(c): c for c in json.loads(lesson.read_text())["cells"] if exercise_tag(c)}
        if not cells:
            continue
        solved = {exercise_tag(c): c for c in json.loads((ROOT / "notebooks" / "solutions" / lesson.name).read_text())["cells"]
                  if exercise_tag(c)}
        for tag, cell in cells.items():
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                assert "..." in source, f"{lesson.name} {tag}: the exercise cell needs a `...` placeholder"
                assert source != "".join(solved[tag]["source"]), f"{lesson.name} {tag}: solution equals the placeholder"


def test_colab_badges_and_install_cells_use_the_one_repository_address():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "set_repo_url.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_lesson_opens_with_a_badge_and_the_colab_install_cell():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert f"blob/main/notebooks/{path.name}" in "".join(cells[0]["source"]), f"{path.name}: badge"
        assert any('"google.colab" in sys.modules' in "".join(c["source"]) for c in cells[:3]), path.name


TRAINS = ("seed_runs(", "train_lora_adapter(", "train_with_trainer(", "train_full_finetune(",
          "full_finetune_example_losses(", "adapter_report(", "adapter_example_losses(")


def test_lessons_that_train_open_on_a_colab_gpu_runtime_and_the_others_on_a_cpu():
    """Colab reads `accelerator` from the notebook: without it the badge opens a CPU runtime and the capstone
    falls back to the tiny model; a lesson that trains nothing need not take a GPU from a learner's quota."""
    sys.path.insert(0, str(ROOT / "tools"))
    from clean_notebooks import COLAB_GPU

    for path in sorted((ROOT / "notebooks").rglob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text())
        code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
        trains = any(call in code for call in TRAINS)
        metadata = notebook["metadata"]
        assert (metadata.get("accelerator") == "GPU") == trains, path.name
        if trains:
            assert metadata["colab"]["gpuType"] == COLAB_GPU["colab"]["gpuType"], path.name


def _section(lesson: str, heading: str) -> list[str]:
    """The code cells of one section of a lesson: from its heading to the next '## ' heading."""
    cells = json.loads((ROOT / "notebooks" / lesson).read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith(heading))
    end = next(i for i in range(start + 1, len(cells)) if "".join(cells[i]["source"]).startswith("## "))
    return ["".join(c["source"]) for c in cells[start:end] if c["cell_type"] == "code"]


def test_the_take_home_recipe_writes_every_call_out_and_leans_on_the_course_only_where_marked():
    """Lesson 04's recipe is the code a learner copies: the library calls appear in full, and course_utils only
    names the offline model, the course's instruction text and a file check (each import on a marked line)."""
    recipe = _section("04_lora_with_peft.ipynb", "## 3. The recipe to take home")
    text = "\n".join(recipe)
    for call in ("load_dataset(", "apply_chat_template(", "DataCollatorForSeq2Seq(", "LoraConfig(", "get_peft_model(",
                 "TrainingArguments(", "Trainer(", ".train()", "save_pretrained(", "PeftModel.from_pretrained(",
                 "merge_and_unload()", ".generate(", "resume_from_checkpoint"):
        assert call in text, f"the recipe should show {call}"
    for name in ("train_lora_adapter", "train_with_trainer", "lora_config(", "collate(", "experiment_settings("):
        assert name not in text, f"the recipe should not go through course_utils' {name}"
    imports = {line for line in text.splitlines() if "course_utils" in line and "import" in line}
    assert imports == {"from course_utils.data import SQL_INSTRUCTION, evenly_spaced, load_examples, read_chat_rows, "
                       "training_features", "from course_utils.models import load_tokenizer, resolve_model"}, imports
    # copyable: every name the recipe reads is defined in the recipe, except the lesson's sizes (`profile`) and
    # section 1's count (`predicted`), both on lines the markdown names
    defined, used = set(dir(builtins)), set()
    for cell in recipe:
        for node in ast.walk(ast.parse(cell)):
            if isinstance(node, ast.Name):
                (defined if isinstance(node.ctx, ast.Store) else used).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.arg)):
                defined.add(node.name if isinstance(node, ast.FunctionDef) else node.arg)
            elif isinstance(node, ast.alias):
                defined.add((node.asname or node.name).split(".")[0])
    assert used - defined == {"profile", "predicted"}, used - defined
    qlora = "\n".join(_section("09_qlora_training.ipynb", "## 6. The recipe in 4 bits"))
    for call in ("BitsAndBytesConfig(", "bnb_4bit_quant_type=\"nf4\"", "bnb_4bit_use_double_quant=True",
                 "prepare_model_for_kbit_training(", "paged_adamw_8bit", "Trainer("):
        assert call in qlora, f"the QLoRA recipe should show {call}"
