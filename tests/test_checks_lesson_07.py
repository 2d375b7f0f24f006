"""Self-checks of lesson 07 (QLoRA mechanics): placeholder, typical wrong answers, right answer.

The expected values are computed here by hand from shapes and byte sizes, not copied from a run.
"""

import math

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from course_utils import checks  # noqa: E402
from course_utils.checks import NOT_ATTEMPTED, WRONG  # noqa: E402


def nf4_layer(in_features=256, out_features=128, double_quant=True, seed=0):
    torch.manual_seed(seed)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compress_statistics=double_quant,
                              quant_type="nf4")
    return layer.to("cpu")  # quantizes the weight


def test_layer_stored_bits():
    layer = nf4_layer(256, 128)
    numel = 256 * 128
    blocks = numel // 64  # 512 block scales, 8-bit each
    nested = math.ceil(blocks / 256)  # 2 fp32 scales of the scales
    right = (numel * 4 + blocks * 8 + nested * 32 + 32) / numel  # codes, absmax codes, nested absmax, offset
    check = checks.check_layer_stored_bits
    assert check(..., layer).status == NOT_ATTEMPTED
    assert check(right, layer).correct
    assert check(torch.tensor(right), layer.weight).correct  # the weight alone works too
    assert "code tables" in check(right + (16 + 256) * 32 / numel, layer).message
    assert "two 4-bit codes" in check(right * 2, layer).message  # divided by the packed length
    assert "without double quantization" in check(4.5, layer).message
    assert "code alone" in check(4.0, layer).message
    assert "bytes per weight" in check(right / 8, layer).message
    assert check(5.0, layer).status == WRONG
    assert check("four", layer).status == WRONG


def test_layer_stored_bits_without_dq():
    layer = nf4_layer(128, 64, double_quant=False)
    right = 4 + 32 / 64  # fp32 absmax per block of 64
    assert checks.check_layer_stored_bits(right, layer).correct
    assert checks.check_layer_stored_bits(4.127, layer).status == WRONG


def test_layer_stored_bits_needs_a_quantized_layer():
    with pytest.raises(ValueError, match="Linear4bit"):
        checks.check_layer_stored_bits(4.0, torch.nn.Linear(4, 4))


TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
        "max_position_embeddings": 256}


def tiny_qlora_bytes() -> int:
    """NF4 + DQ linears, everything else bf16, counted by hand from the shapes above."""
    head_dim, kv = 64 // 4, 2 * (64 // 4)
    shapes = [(64, 64), (kv, 64), (kv, 64), (64, 64), (128, 64), (128, 64), (64, 128)]  # q k v o gate up down
    total = 0
    for out_features, in_features in shapes * 2:  # two layers
        n = out_features * in_features
        blocks = n // 64
        total += n // 2  # packed codes
        total += blocks + 4 * math.ceil(blocks / 256) + 4  # 8-bit absmax, nested fp32 absmax, fp32 offset
        total += 4 * 256 + 4 * 16  # the two fp32 code tables bitsandbytes keeps per layer
    others = 2 * 1000 * 64 + 2 * 2 * 64 + 64  # embeddings, lm_head (untied), 2 norms per layer, final norm
    total += 2 * others  # bf16
    total += 2 * 4 * (head_dim // 2)  # rotary inv_freq and original_inv_freq, fp32
    return total


def test_qlora_model_bytes():
    from course_utils.memory import load_config

    config = load_config(TINY)
    right = tiny_qlora_bytes()
    total_params = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3) + 2 * 1000 * 64 + 5 * 64  # linears, embed+head, norms
    check = checks.check_qlora_model_bytes
    assert check(..., config).status == NOT_ATTEMPTED
    assert check(right, config).correct
    assert "GiB" in check(right / 2**30, config).message
    assert "every parameter" in check(total_params / 2, config).message
    assert "16 bits" in check(total_params * 2, config).message
    assert check(-1, config).status == WRONG
    assert check(right * 1.5, config).status == WRONG


def test_unquantized_fraction():
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(100, 64)  # 6,400 fp32 values: 25,600 bytes
    model.proj = nf4_layer(64, 128, seed=1)  # 8,192 weights
    packed = 8192 // 2
    blocks = 8192 // 64
    constants = blocks + 4 * 1 + 4 + 4 * 256 + 4 * 16  # absmax codes, nested absmax, offset, two tables
    right = 25600 / (25600 + packed + constants)
    check = checks.check_unquantized_fraction
    assert check(..., model).status == NOT_ATTEMPTED
    assert check(right, model).correct
    assert "percentage" in check(100 * right, model).message
    assert "fraction of parameters" in check(6400 / (6400 + 8192), model).message
    assert "quantized part" in check(1 - right, model).message
    assert "constants" in check(25600 / (25600 + packed), model).message
    assert check(0.5, model).status == WRONG
