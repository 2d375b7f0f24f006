"""Tests of the memory planner against real models, PEFT adapters and optimizers.

Static parts (weights, quantization constants, adapters, gradients, optimizer
states) must match what PyTorch, bitsandbytes and PEFT really allocate, byte
for byte. Activations are an estimate: they must agree with the bytes autograd
really saves in a forward pass of the tiny model.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from course_utils import memory
from course_utils.memory import (
    A100_40GB, NAMED_TARGETS, SHIPPED_CONFIGS, T4, load_config, model_layout, plan_memory,
    saved_activation_bytes, stored_bytes,
)
from course_utils.models import load_model

FORMATS = {  # name -> load_model keyword arguments
    "fp32": {},
    "int8": {"quantization": "int8"},
    "fp4": {"quantization": "fp4"},
    "nf4": {"quantization": "nf4"},
    "nf4+dq": {"quantization": "nf4", "double_quant": True},
}
CPU_FP32 = {"compute_dtype": torch.float32, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's small forward passes on one thread.

    They are tiny (tens of tokens), where a second OpenMP thread gains nothing
    and, on a busy CI machine, costs many times the work in spinning.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_config():
    return load_config("smollm2-135m")


@pytest.fixture(scope="module")
def fp32_model():
    return load_model()


@pytest.fixture(scope="module", params=list(FORMATS))
def loaded(request, fp32_model):
    """(format name, kwargs, model): each format of the tiny model is loaded once per module."""
    kwargs = FORMATS[request.param]
    return request.param, kwargs, load_model(**kwargs) if kwargs else fp32_model


def _peft(model, rank, targets):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, target_modules=list(targets)))


MINI_SHAPES = {  # architecture -> (shipped config, overrides): 8 layers, small widths, same structure
    "llama": ("smollm2-135m", {}),  # the tiny model's widths and its 49k vocabulary
    "qwen2": ("qwen2.5-7b", {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "vocab_size": 1024}),
    "olmo2": ("olmo2-7b", {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
                           "num_key_value_heads": 4, "vocab_size": 1024}),
}


def mini_config(arch: str):
    name, overrides = MINI_SHAPES[arch]
    raw = json.loads((memory.CONFIG_DIR / SHIPPED_CONFIGS[name]).read_text())
    raw.update(num_hidden_layers=8, bos_token_id=None, eos_token_id=None, pad_token_id=None, **overrides)
    return load_config(raw)


@pytest.fixture(scope="module", params=list(MINI_SHAPES))
def mini(request):
    """(config, randomly initialised fp32 model) of a small model with a real architecture's structure."""
    from transformers import AutoModelForCausalLM

    config = mini_config(request.param)
    torch.manual_seed(0)
    return config, AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _llama_style_params(c: dict) -> int:
    """Parameter count written out by hand from the config fields (independent of the planner)."""
    h, i, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    d = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h  # q, k, v, o, gate/up/down, two norms
    if c["model_type"] == "qwen2":
        per_layer += q + 2 * kv  # q/k/v biases
    if c["model_type"] == "olmo2":
        per_layer += q + kv  # q_norm, k_norm
    embeddings = vocab * h * (1 if c["tie_word_embeddings"] else 2)
    return embeddings + layers * per_layer + h  # + final norm


# --------------------------------------------------------------------------- configs and shapes

@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_shipped_configs_build_with_the_parameter_count_of_their_fields(name):
    raw = json.loads((memory.CONFIG_DIR / SHIPPED_CONFIGS[name]).read_text())
    assert raw["_source"], "every shipped config says where it comes from"
    layout = model_layout(name)
    assert layout.total_params == _llama_style_params(raw)
    assert layout.num_layers == raw["num_hidden_layers"]
    assert layout.tied_embeddings == raw["tie_word_embeddings"]


def test_shipped_tiny_config_matches_the_loaded_model(tiny_config, fp32_model):
    loaded_config = fp32_model.config
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings"):
        assert getattr(tiny_config, field) == getattr(loaded_config, field), field
    unique = {p.data_ptr(): p.numel() for p in fp32_model.parameters()}
    assert model_layout(tiny_config).total_params == sum(unique.values())


def test_published_parameter_counts():
    # Model cards: Qwen2.5-7B 7.61B, OLMo-2 7B 7.30B, Llama-2 7B/13B/70B 6.74B/13.0B/69.0B.
    expected = {"qwen2.5-7b": 7.61, "olmo2-7b": 7.30, "llama-7b": 6.74, "llama-13b": 13.0, "llama-70b": 69.0,
                "qwen2.5-1.5b": 1.54, "smollm2-135m": 0.135}
    for name, billions in expected.items():
        assert model_layout(name).total_params / 1e9 == pytest.approx(billions, rel=0.01), name


def test_qwen2_has_qkv_biases_and_olmo2_has_qk_norms():
    qwen = model_layout("qwen2.5-7b")
    assert {lin.suffix for lin in qwen.linears if lin.bias} == {"q_proj", "k_proj", "v_proj"}
    olmo = model_layout("olmo2-7b")
    assert len(olmo.layer_norm_widths) == 4 and not any(lin.bias for lin in olmo.linears)


def test_load_config_accepts_names_files_folders_dicts_and_objects(tmp_path):
    by_name = load_config("qwen2.5-7b")
    assert by_name.hidden_size == 3584 and by_name.model_type == "qwen2"
    assert load_config("Qwen/Qwen2.5-7B-Instruct").to_dict() == by_name.to_dict()
    assert load_config(by_name) is by_name
    file = memory.CONFIG_DIR / "llama-7b.json"
    assert load_config(file).num_hidden_layers == 32
    (tmp_path / "config.json").write_text(file.read_text())
    assert load_config(tmp_path).intermediate_size == 11008
    raw = json.loads(file.read_text())
    assert load_config(raw).vocab_size == 32000
    assert plan_memory(raw, "lora").total == plan_memory("llama-7b", "lora").total


def test_load_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="qwen2.5-7b"):  # lists the shipped names
        load_config("no-such-model")
    with pytest.raises(ValueError, match="model_type"):
        load_config({"hidden_size": 8})
    with pytest.raises(ValueError, match="config.json"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- static parts vs real models

def test_static_parts_match_loaded_models_byte_for_byte(loaded):
    name, kwargs, model = loaded
    plan = plan_memory(model.config, "lora", quantization=kwargs.get("quantization"),
                       double_quant=kwargs.get("double_quant", False), **CPU_FP32)
    measured = stored_bytes(model)
    assert plan.base_weights == measured["base_weights"], name
    assert plan.quant_constants == measured["quant_constants"], name
    assert plan.unquantized == measured["unquantized"], name
    # stored_bytes sees what transformers' footprint sees, plus bitsandbytes' constants.
    assert plan.model_bytes - plan.quant_constants == model.get_memory_footprint()


def test_quantized_bits_per_weight_agree_with_the_paper_arithmetic(tiny_config):
    linear_params = model_layout(tiny_config).linear_weight_params

    def bits(**kwargs):
        plan = plan_memory(tiny_config, "lora", **kwargs, **CPU_FP32)
        return 8 * (plan.base_weights + plan.quant_constants) / linear_params

    # 4 + 32/64 without DQ; 4 + 8/64 + 32/(64*256) with DQ; the per-layer code tables add < 0.1 bit here.
    assert bits(quantization="nf4") == pytest.approx(4.5, abs=0.01)
    assert bits(quantization="nf4", double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=0.1)
    assert bits(quantization="int8") == pytest.approx(8, abs=0.1)
    assert bits(quantization=None) == 32


# --------------------------------------------------------------------------- adapters, gradients, optimizer

@pytest.mark.parametrize("rank", [4, 16])
@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_adapter_bytes_match_peft(fp32_model, tiny_config, rank, targets):
    peft_model = _peft(fp32_model, rank, NAMED_TARGETS[targets])
    try:
        lora = [p for n, p in peft_model.named_parameters() if "lora_" in n]
        trainable = peft_model.get_nb_trainable_parameters()[0]
    finally:
        peft_model.unload()  # give the shared fixture its plain linears back
    plan = plan_memory(tiny_config, "lora", rank=rank, targets=targets, **CPU_FP32)
    assert plan.adapters == sum(p.numel() * p.element_size() for p in lora)
    assert plan.trainable_params == trainable


def test_explicit_target_list(tiny_config):
    plan = plan_memory(tiny_config, "lora", rank=8, targets=["q_proj", "v_proj"], **CPU_FP32)
    assert plan.adapters == 4 * 30 * 8 * ((576 + 576) + (576 + 192))  # fp32, 30 layers, r (d + k)


def test_gradients_and_optimizer_states_match_a_real_step():
    config = mini_config("llama")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = _peft(AutoModelForCausalLM.from_config(config, dtype=torch.float32), 16, NAMED_TARGETS["all-linear"])
    peft_model.train()
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    params = [p for p in peft_model.parameters() if p.requires_grad]

    plan = plan_memory(config, "lora", rank=16, optimizer="adamw_torch", **CPU_FP32)
    assert plan.gradients == sum(p.grad.numel() * p.grad.element_size() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    optimizer.step()
    moments = [state[k] for state in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
    assert plan.optimizer == sum(t.numel() * t.element_size() for t in moments)

    import bitsandbytes as bnb

    optimizer_8bit = bnb.optim.AdamW8bit(params, lr=1e-4)  # r=16 on 576 wide: some tensors 8-bit, some fp32
    optimizer_8bit.step()
    storages = {t.untyped_storage().data_ptr(): t.numel() * t.element_size()
                for state in optimizer_8bit.state.values() for t in state.values() if isinstance(t, torch.Tensor)}
    plan_8bit = plan_memory(config, "lora", rank=16, optimizer="adamw_8bit", **CPU_FP32)
    assert plan_8bit.optimizer == sum(storages.values())
    assert plan_memory(config, "lora", rank=16, optimizer="sgd", **CPU_FP32).optimizer == 0


def test_full_fine_tuning_is_16_bytes_per_parameter_before_activations(fp32_model):
    plan = plan_memory("llama-7b", "full")  # fp32 master weights, fp32 grads, two fp32 Adam moments
    static = plan.base_weights + plan.unquantized - plan.layout.buffer_bytes + plan.gradients + plan.optimizer
    assert static / plan.total_params == pytest.approx(16)
    tiny = plan_memory("smollm2-135m", "full", **CPU_FP32)
    assert tiny.gradients == sum(p.numel() * 4 for p in {p.data_ptr(): p for p in fp32_model.parameters()}.values())
    assert tiny.adapters == 0 and tiny.trainable_params == tiny.total_params


# --------------------------------------------------------------------------- activations

ACTIVATION_CASES = {  # name -> (method, targets, checkpointing, dtype)
    "lora attention fp32": ("lora", "attention", False, torch.float32),
    "lora all-linear fp32, checkpointing": ("lora", "all-linear", True, torch.float32),
    "full fp32": ("full", "all-linear", False, torch.float32),
    "lora all-linear bf16 autocast": ("lora", "all-linear", False, torch.bfloat16),
}


@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_estimate_matches_what_autograd_saves(case, mini):
    config, base = mini
    method, targets, checkpointing, dtype = ACTIVATION_CASES[case]
    batch, seq_len = 2, 16
    model = copy.deepcopy(base).to(dtype)
    if method != "full":
        model = _peft(model, 8, NAMED_TARGETS[targets])  # PEFT keeps adapters in fp32 on a bf16 base
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    measured = saved_activation_bytes(model, ids, autocast_dtype=None if dtype == torch.float32 else dtype)
    plan = plan_memory(config, method, rank=8, targets=targets, batch=batch, seq_len=seq_len,
                       gradient_checkpointing=checkpointing, compute_dtype=dtype, device="cpu",
                       weight_dtype=dtype if method != "full" else None)
    predicted = plan.activation_detail.saved + plan.activation_detail.weight_casts
    # Checkpointing keeps rotary cos/sin alive outside autograd's saved tensors: the plan counts them.
    assert predicted == pytest.approx(measured, rel=0.025 if checkpointing else 0.005), case


def test_activation_estimate_on_the_tiny_model_itself(fp32_model, tiny_config):
    peft_model = _peft(fp32_model, 16, NAMED_TARGETS["all-linear"])
    try:
        peft_model.train()
        ids = torch.randint(0, tiny_config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
        measured = saved_activation_bytes(peft_model, ids)
    finally:
        peft_model.eval()
        peft_model.unload()
    plan = plan_memory(tiny_config, "lora", rank=16, batch=1, seq_len=32, **CPU_FP32)
    assert plan.activation_detail.saved == pytest.approx(measured, rel=0.005)


def _with_16bit_decoder_linears(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The dtypes of a prepared QLoRA model, with `dtype` linears standing in for the 4-bit ones.

    `prepare_model_for_kbit_training` (and the course's `prepare_for_training` on an fp16 GPU)
    leave every tensor that is not 4-bit in fp32: embeddings, norms, biases and the lm_head.
    """
    output = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            module.to(dtype)
    return model


def test_fp32_head_under_autocast_costs_the_16bit_copy_autograd_saves(mini):
    """An fp32 lm_head under 16-bit autocast: the plan's saved bytes match autograd's, copy included.

    The mini models cover an untied head (qwen2, olmo2) and a head tied to the embeddings (llama),
    whose shared matrix is cast all the same. The check discriminates: the copy is far larger than
    the tolerance, so a plan without it fails.
    """
    config, base = mini
    batch, seq_len, dtype = 2, 16, torch.bfloat16  # bf16: the autocast dtype a CPU runs
    model = _peft(_with_16bit_decoder_linears(copy.deepcopy(base), dtype), 8, NAMED_TARGETS["all-linear"])
    model.train()
    assert model.get_output_embeddings().weight.dtype == torch.float32
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    measured = saved_activation_bytes(model, ids, autocast_dtype=dtype)
    plan = plan_memory(config, "lora", rank=8, targets="all-linear", batch=batch, seq_len=seq_len,
                       compute_dtype=dtype, weight_dtype=dtype, unquantized_dtype=torch.float32, device="cpu")
    detail = plan.activation_detail
    assert detail.head_weight_copy == config.vocab_size * config.hidden_size * 2  # bf16: 2 bytes
    predicted = detail.saved + detail.weight_casts + detail.head_weight_copy
    assert predicted == pytest.approx(measured, rel=0.005)
    assert detail.head_weight_copy > 0.02 * measured  # without the copy the plan would be off by more than rel


@pytest.mark.parametrize("name", ["qwen2.5-7b", "smollm2-135m"])  # untied head, head tied to the embeddings
@pytest.mark.parametrize("compute_dtype", [torch.float16, torch.bfloat16])
def test_head_copy_is_vocab_times_hidden_in_the_compute_dtype(name, compute_dtype):
    config = load_config(name)
    plan = plan_memory(name, "qlora", batch=1, seq_len=64, compute_dtype=compute_dtype,
                       unquantized_dtype=torch.float32, device="cuda")
    element_size = torch.empty(0, dtype=compute_dtype).element_size()
    expected = config.vocab_size * config.hidden_size * element_size
    assert plan.activation_detail.head_weight_copy == expected
    assert plan.activation_detail.total == plan.activations  # the copy is inside the activations part
    without_copy = plan.activation_detail.total - expected
    assert plan.activations - without_copy == expected
    assert "lm_head 16-bit copy" in plan.summary()


HEAD_COPY_CASES = {  # name -> (method, compute dtype, dtype of embeddings / head / norms, copy expected)
    "qlora on a T4: fp32 head, fp16 autocast": ("qlora", torch.float16, torch.float32, True),
    "qlora on Ampere, fp32 head kept": ("qlora", torch.bfloat16, torch.float32, True),
    "qlora, head in the compute dtype": ("qlora", torch.float16, torch.float16, False),
    "lora on a 16-bit base, head in the compute dtype": ("lora", torch.bfloat16, torch.bfloat16, False),
    "fp32 compute: no autocast": ("lora", torch.float32, torch.float32, False),
    "full FT: the head trains, its copy is a weight cast": ("full", torch.float16, torch.float32, False),
}


@pytest.mark.parametrize("case", list(HEAD_COPY_CASES))
def test_head_copy_is_planned_exactly_for_a_frozen_head_cast_by_autocast(case):
    method, compute, head, expected = HEAD_COPY_CASES[case]
    plan = plan_memory("qwen2.5-7b", method, batch=1, seq_len=64, compute_dtype=compute,
                       unquantized_dtype=head, device="cuda")
    assert (plan.activation_detail.head_weight_copy > 0) == expected, case
    assert ("lm_head 16-bit copy" in plan.summary()) == expected, case
    if method == "full":  # the trained fp32 head's copy is counted once, among the trained weights' casts
        layout = plan.layout
        assert plan.activation_detail.weight_casts >= 2 * (layout.embedding_params + layout.lm_head_params)


def test_the_capstone_plan_on_a_t4_prices_its_fp32_head_copy():
    """The recipe keeps the head in fp32 on a T4 (`planned_dtypes`), so its plan carries the copy; an A100's does not."""
    from course_utils.capstone import QLoRARecipe

    config = load_config("qwen2.5-7b")
    t4_plan, a100_plan = QLoRARecipe().plan(T4), QLoRARecipe().plan(A100_40GB)
    assert t4_plan.activation_detail.head_weight_copy == config.vocab_size * config.hidden_size * 2  # fp16
    assert a100_plan.activation_detail.head_weight_copy == 0  # bf16 head, bf16 compute
    assert t4_plan.verdict(T4).fits  # still the free Colab GPU the capstone is written for


def test_activations_grow_with_tokens_and_shrink_with_checkpointing():
    plan = plan_memory("qwen2.5-7b", "qlora", batch=2, seq_len=512)
    assert plan.replan(seq_len=1024).activations > 1.9 * plan.activations
    assert plan.replan(gradient_checkpointing=True).activations < plan.activations / 3
    # The fp32 logits path (log-softmax + two gradient buffers) is at least 12 bytes per vocab entry per token.
    assert plan.activation_detail.head + plan.activation_detail.loss_peak >= 2 * 512 * 152064 * 12


# --------------------------------------------------------------------------- verdicts

def test_capstone_qlora_fits_a_t4_and_full_fine_tuning_does_not():
    capstone = dict(rank=16, targets="all-linear", batch=2, seq_len=512, gradient_checkpointing=True,
                    optimizer="paged_adamw_8bit")
    for name in ("qwen2.5-7b", "olmo2-7b", "llama-7b"):
        plan = plan_memory(name, "qlora", profile=T4, **capstone)
        assert plan.settings.compute_dtype == torch.float16  # a T4 has no native bf16
        assert plan.verdict(T4).fits, name
    full = plan_memory("llama-7b", "full", batch=2, seq_len=512, profile=A100_40GB)
    result = full.verdict(A100_40GB)
    assert not result.fits and result.recipe is not None and result.recipe.fits
    assert any("QLoRA" in s.change and s.fits for s in result.suggestions)
    assert "does not fit" in str(result)


def test_verdict_says_smaller_model_when_nothing_helps():
    result = plan_memory("llama-70b", "lora", profile=T4).verdict(T4)
    assert not result.fits and not result.recipe.fits
    assert "smaller model" in str(result)


def test_fits_is_a_byte_comparison_and_the_cpu_has_no_cuda_context(tiny_config):
    plan = plan_memory(tiny_config, "lora", **CPU_FP32)
    assert plan.overhead == 0 and plan_memory(tiny_config, "lora").overhead > 0
    assert plan.fits(plan.total) and not plan.fits(plan.total - 1)
    assert plan.total == sum(plan.parts.values())
    text = plan.summary()
    assert "GiB" in text and "activations" in text and "total" in text


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, "rank"),
    ({"rank": -4}, "rank"),
    ({"rank": 1000}, "min\\(d, k\\)"),
    ({"batch": 0}, "batch"),
    ({"seq_len": 0}, "seq_len"),
    ({"seq_len": 1.5}, "seq_len"),
    ({"method": "prefix"}, "full"),
    ({"quantization": "int4"}, "nf4"),
    ({"optimizer": "adafactor"}, "paged_adamw_8bit"),
    ({"targets": "mlp"}, "all-linear"),
    ({"targets": ["q_proj", "query"]}, "k_proj"),  # lists the valid module names
    ({"targets": []}, "at least one"),
    ({"method": "full", "quantization": "nf4"}, "quantized"),
    ({"method": "qlora", "quantization": "int8"}, "4-bit"),
    ({"method": "lora", "quantization": "int8", "double_quant": True}, "4-bit"),
    ({"compute_dtype": "fp8"}, "bf16"),
])
def test_bad_input_raises_a_value_error_naming_the_fix(tiny_config, kwargs, message):
    kwargs = {"method": "lora", **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_memory(tiny_config, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"compute_dtype": torch.int8}, "compute_dtype torch.int8.*bf16"),
    ({"compute_dtype": 16}, "compute_dtype 16"),
    ({"weight_dtype": torch.int32}, "weight_dtype"),
    ({"unquantized_dtype": torch.float64}, "unquantized_dtype"),
    ({"gradient_checkpointing": "no"}, "True or False, got 'no'"),  # bool("no") is True
    ({"gradient_checkpointing": 1}, "True or False, got 1"),
    ({"method": "qlora", "double_quant": "yes"}, "double_quant"),
    ({"rank": True}, "rank"),
    ({"batch": True}, "batch"),
])
def test_settings_of_the_wrong_type_are_refused(tiny_config, kwargs, message):
    kwargs = {"method": "lora", **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_memory(tiny_config, **kwargs)


@pytest.mark.parametrize("field, value", [
    ("hidden_size", 0), ("num_hidden_layers", -1), ("num_hidden_layers", 0), ("vocab_size", 0),
    ("intermediate_size", 0), ("num_attention_heads", 0), ("num_key_value_heads", 0), ("head_dim", 0),
    ("hidden_size", 576.0), ("num_hidden_layers", True),
])
def test_configs_with_sizes_that_are_not_positive_integers_name_the_field(field, value):
    raw = json.loads((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    raw[field] = value
    with pytest.raises(ValueError, match=f"{field} must be a positive integer, got {value!r}"):
        plan_memory(raw, "lora")


def test_a_config_object_with_a_bad_size_is_refused_too(tiny_config):
    broken = copy.deepcopy(tiny_config)
    broken.hidden_size = -576
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        plan_memory(broken, "lora")


def test_a_config_missing_its_sizes_is_refused_not_planned_as_a_default_7b(tmp_path):
    with pytest.raises(ValueError, match="lacks hidden_size, num_hidden_layers.*never fills them"):
        plan_memory({"model_type": "llama"}, "qlora")
    raw = json.loads((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    del raw["vocab_size"]
    file = tmp_path / "config.json"
    file.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=f"{file} lacks vocab_size"):
        load_config(file)
    file.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON config"):
        load_config(tmp_path)


@pytest.mark.parametrize("call, message", [
    (lambda c: plan_memory(c, optimizer=["adamw"]), "optimizer must be one name"),
    (lambda c: plan_memory(c, method="lora", targets=None), "targets must be 'attention', 'all-linear' or a list"),
    (lambda c: plan_memory(c, method="lora", targets=5), "targets must be"),
    (lambda c: plan_memory(c, method="lora", targets=["q_proj", 5]), "targets must be"),
    (lambda c: plan_memory(c).fits("lots"), "fits\\(\\) takes the device's memory in bytes"),
    (lambda c: plan_memory(c).fits(float("nan")), "fits\\(\\) takes"),
    (lambda c: plan_memory(c).verdict(None), "verdict\\(\\) takes a HardwareProfile"),
    (lambda c: plan_memory(c).verdict("T4"), "verdict\\(\\) takes a HardwareProfile"),
])
def test_arguments_of_the_wrong_kind_are_named_not_raw_type_errors(tiny_config, call, message):
    """Each raised a raw TypeError or AttributeError before (unhashable type, not iterable, '<=' not supported)."""
    with pytest.raises(ValueError, match=message):
        call(tiny_config)


def test_numpy_integers_plan_the_same_as_python_ones(tiny_config):
    import numpy as np

    plain = plan_memory(tiny_config, method="lora", rank=8, batch=2, seq_len=64)
    numpy = plan_memory(tiny_config, method="lora", rank=np.int64(8), batch=np.int32(2), seq_len=np.int64(64))
    assert numpy.total == plain.total and type(numpy.settings.rank) is int
