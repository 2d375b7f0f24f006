"""course_utils.qlora: what a 4-bit layer stores and computes, dequantized equivalents, LoftQ, paging, checkpointing.

Expected values come from the definitions (shapes, byte sizes, the SVD), not from a run of the helpers.
"""

import math

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from course_utils import loftq, qlora  # noqa: E402
from course_utils.memory import quantized_linear_bytes  # noqa: E402


def gaussian(out_features=128, in_features=256, seed=0):
    return torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- one 4-bit layer


@pytest.mark.parametrize("double_quant", [False, True])
def test_quant_state_tensors_and_stored_bytes_match_the_planner(double_quant):
    layer = qlora.four_bit_linear(gaussian(), "nf4", double_quant)
    names = set(qlora.quant_state_tensors(layer.weight))
    assert names == ({"absmax", "code", "offset", "state2.absmax", "state2.code"} if double_quant else {"absmax", "code"})
    weights, constants = quantized_linear_bytes(128 * 256, 128, "nf4", double_quant)
    assert qlora.layer_stored_bytes(layer) == weights + constants
    assert qlora.quant_state_tensors(torch.nn.Linear(4, 4).weight) == {}


def test_compute_dtype_changes_the_output_dtype_not_the_stored_bytes():
    weight, x = gaussian(), torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    fp32 = qlora.four_bit_linear(weight, "nf4", True, torch.float32)
    bf16 = qlora.four_bit_linear(weight, "nf4", True, torch.bfloat16)
    assert qlora.layer_stored_bytes(fp32) == qlora.layer_stored_bytes(bf16)
    assert torch.equal(fp32.weight.data, bf16.weight.data)  # the same codes
    with torch.no_grad():
        assert fp32(x).dtype == torch.float32 and bf16(x.bfloat16()).dtype == torch.bfloat16
        by_hand = x @ qlora.dequantize_weight(fp32).T  # dequantize, then an ordinary matmul
        assert torch.allclose(fp32(x), by_hand, atol=1e-5)
    assert not fp32.support_avx512bf16_for_cpu  # the CPU shortcut stays off


def test_dequantized_weight_is_close_to_the_original_and_on_the_nf4_grid():
    weight = gaussian()
    dequantized = qlora.dequantize_weight(qlora.four_bit_linear(weight, "nf4", False))
    blocks = weight.reshape(-1, 64)
    absmax = blocks.abs().amax(1, keepdim=True)
    levels = dequantized.reshape(-1, 64) / absmax  # each value is an NF4 level times its block's absmax
    table = bnb.functional.get_4bit_type("nf4", device="cpu")
    assert (levels[..., None] - table).abs().amin(-1).max() < 1e-5
    assert (dequantized - weight).abs().max() <= 0.5 * table.diff().max() * absmax.max() + 1e-6


def test_relative_weight_error_is_the_frobenius_error_over_all_4bit_layers():
    first, second = gaussian(64, 128, seed=5), 3 * gaussian(32, 64, seed=6)
    reference, model = torch.nn.Module(), torch.nn.Module()
    reference.a, reference.b = torch.nn.Linear(128, 64, bias=False), torch.nn.Linear(64, 32, bias=False)
    reference.a.weight.data, reference.b.weight.data = first, second
    model.a, model.b = qlora.four_bit_linear(first, "fp4", False), qlora.four_bit_linear(second, "fp4", False)
    errors = [(qlora.dequantize_weight(model.a) - first).square().sum(), (qlora.dequantize_weight(model.b) - second).square().sum()]
    expected = math.sqrt(sum(errors) / (first.square().sum() + second.square().sum()))
    assert qlora.relative_weight_error(model, reference) == pytest.approx(expected, rel=1e-5)
    assert 0 < expected < 0.2
    with pytest.raises(ValueError, match="no 4-bit"):
        qlora.relative_weight_error(reference, reference)


def test_most_distinct_per_block_tells_q4_1_values_from_original_ones():
    weight = gaussian(64, 128, seed=7)
    assert qlora.most_distinct_per_block(weight) == 32
    blocks = weight.reshape(-1, 32)  # Q4_1 by hand: per block, min + scale x round((w - min) / scale), 16 levels
    low, high = blocks.amin(1, keepdim=True), blocks.amax(1, keepdim=True)
    scale = (high - low) / 15
    q4_1 = (low + scale * ((blocks - low) / scale).round()).reshape(weight.shape)
    assert qlora.most_distinct_per_block(q4_1) <= 16
    with pytest.raises(ValueError, match="blocks of 32"):
        qlora.most_distinct_per_block(torch.zeros(40))


# --------------------------------------------------------------------------- storage table


class TinyRMSNorm(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))


def tiny_model():
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(100, 64)
    model.norm = TinyRMSNorm(64)
    model.proj = qlora.four_bit_linear(gaussian(128, 64), "nf4", True)
    model.lm_head = torch.nn.Linear(64, 100, bias=False)
    model.lm_head.weight = model.embed.weight  # tied, as in SmolLM2
    return model


def test_storage_table_groups_by_role_and_counts_shared_storage_once():
    table = qlora.storage_table(tiny_model())
    by_role = {who: row for (who, _, _), row in table.items()}
    assert by_role["decoder linear (4-bit)"].bytes == 128 * 64 // 2  # two codes per byte
    assert by_role["embedding"].bytes == 100 * 64 * 4
    assert by_role["lm_head"].tensors == 1 and by_role["lm_head"].bytes == 0  # tied: counted with the embedding
    assert by_role["RMSNorm"].elements == 64
    assert qlora.dtypes_by_role(table)["decoder linear (4-bit)"] == {"uint8"}
    text = qlora.format_storage_table(table)
    assert text.splitlines()[1].startswith("embedding")  # largest group first


# --------------------------------------------------------------------------- LoftQ


def test_loftq_factors_are_the_truncated_svd_divided_by_the_scaling():
    error = gaussian(96, 80, seed=2)
    r, scaling = 6, 2.0
    lora_A, lora_B = loftq.loftq_factors(error, r, scaling)
    assert lora_A.shape == (r, 80) and lora_B.shape == (96, r)
    U, S, Vh = torch.linalg.svd(error.double())
    truncated = (U[:, :r] * S[:r]) @ Vh[:r]
    assert torch.allclose((scaling * lora_B @ lora_A).double(), truncated, atol=1e-4)
    residual = (error - scaling * lora_B @ lora_A).norm().item()
    assert residual == pytest.approx(S[r:].square().sum().sqrt().item(), rel=1e-4)  # Eckart-Young
    # both factors carry sqrt(S / scaling): the same singular values
    assert torch.allclose(torch.linalg.svdvals(lora_A), torch.linalg.svdvals(lora_B), rtol=1e-4)
    with pytest.raises(ValueError, match="r must be"):
        loftq.loftq_factors(error, 81, scaling)
    with pytest.raises(ValueError, match="scaling"):
        loftq.loftq_factors(error, r, 0.0)


def test_apply_loftq_cancels_the_top_of_the_quantization_error():
    from peft import LoraConfig, get_peft_model

    weight = gaussian(128, 64, seed=3)
    model = torch.nn.Module()
    model.proj = qlora.four_bit_linear(weight, "nf4", True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"]))
    report = loftq.apply_loftq(peft_model, {"proj": weight})
    error = weight - qlora.dequantize_weight(model.proj)
    S = torch.linalg.svdvals(error.double())
    assert report.before["proj"] == pytest.approx(error.norm().item(), rel=1e-5)
    assert report.after["proj"] == pytest.approx(S[4:].square().sum().sqrt().item(), rel=1e-4)
    assert report.removed == pytest.approx(S[:4].square().sum().item() / S.square().sum().item(), rel=1e-3)
    module = peft_model.base_model.model.proj
    effective = qlora.dequantize_weight(module) + qlora.lora_delta(module)  # what the model now computes with
    assert (weight - effective).norm().item() == pytest.approx(report.after["proj"], rel=1e-4)
    with pytest.raises(ValueError, match="no LoRA layer"):
        loftq.apply_loftq(torch.nn.Linear(2, 2), {})


def test_without_the_scaling_the_initial_error_does_not_shrink_at_all():
    """PEFT's LoftQ sets B A to the top-r part P of the error, and the adapter adds 2 P when alpha / r = 2:
    ||E - 2P|| = ||E|| exactly, because P is orthogonal to E - P (huggingface/peft#1982)."""
    error = gaussian(64, 64, seed=4)
    lora_A, lora_B = loftq.loftq_factors(error, 8, 1.0)  # PEFT's factors: no division by the scaling
    assert (error - 2.0 * lora_B @ lora_A).norm().item() == pytest.approx(error.norm().item(), rel=1e-5)


# --------------------------------------------------------------------------- paging and checkpointing


def test_paged_tensor_sizes_follow_bitsandbytes_rule():
    paged, small = qlora.paged_tensor_sizes("smollm2-135m", 8)
    assert paged == [] and len(small) == 2 * 7 * 30  # every adapter matrix of the tiny model is too small
    paged, small = qlora.paged_tensor_sizes("qwen2.5-7b", 16)  # hidden 3584, intermediate 18944, kv 512
    assert sorted(set(paged)) == [16 * 18944]  # gate/up's B and down's A, per layer
    assert len(paged) == 3 * 28
    assert 16 * 3584 in small and min(paged) >= qlora.PAGED_MIN_NUMEL > max(small)


def test_checkpointing_runs_every_layer_twice():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    assert qlora.count_layer_calls(model, batch) == 3
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert qlora.count_layer_calls(model, batch) == 6
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="decoder layers"):
        qlora.decoder_layers(torch.nn.Linear(2, 2))


def test_cached_run_losses_runs_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    calls = []

    def run():
        calls.append(1)
        return [1.0, 2.0], [2, 4]

    first = qlora.cached_run_losses({"task": "sql", "what": "test"}, run)
    again = qlora.cached_run_losses({"task": "sql", "what": "test"}, run)
    other = qlora.cached_run_losses({"task": "sql", "what": "other"}, run)
    assert len(calls) == 2 and first == again == other
    assert first.mean == pytest.approx(3.0 / 6)


# --------------------------------------------------------------------------- the tiny model (slower)


@pytest.fixture(scope="module")
def nf4_peft_model():
    from peft import LoraConfig, get_peft_model

    model = qlora.load_format("nf4", double_quant=True)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():  # a non-zero update, so that the adapter shows in the logits
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return peft_model.eval()


def test_load_format_keeps_the_cpu_shortcut_off(nf4_peft_model):
    assert qlora.cpu_shortcut_layers(nf4_peft_model) == 0
    assert sum(1 for _ in qlora.four_bit_modules(nf4_peft_model)) == 7 * 30  # each 4-bit linear once


def test_dequantized_equivalent_computes_the_same_logits(nf4_peft_model):
    ids = torch.tensor([[1, 520, 3000, 77, 9, 12000]])
    with torch.no_grad():
        reference = nf4_peft_model(input_ids=ids).logits
        plain = qlora.dequantized_equivalent(nf4_peft_model)
        equivalent = plain(input_ids=ids).logits
        without = qlora.dequantized_equivalent(nf4_peft_model, adapter_name=None)(input_ids=ids).logits
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in plain.modules())
    assert (equivalent - reference).abs().max() < 1e-3 * reference.abs().max()
    assert (without - reference).abs().max() > 100 * (equivalent - reference).abs().max()  # the adapter shows
