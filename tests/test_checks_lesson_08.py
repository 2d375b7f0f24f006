"""Self-checks of lesson 08 (QLoRA mechanics): placeholder, typical wrong answers, right answer.

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


def experiment_inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(128, 256, generator=generator), torch.randn(4, 256, generator=generator)


def errors_by_hand(weight, x):
    """Relative output error of an NF4 + DQ layer per compute dtype, computed here with bitsandbytes directly."""
    found = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        layer = bnb.nn.Linear4bit(256, 128, bias=False, compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4")
        layer = layer.to("cpu").eval()
        layer.support_avx512bf16_for_cpu = False
        with torch.no_grad():
            exact = x @ weight.T
            found[name] = ((layer(x.to(dtype)).float() - exact).norm() / exact.norm()).item()
    return found


def test_compute_dtype_experiment():
    weight, x = experiment_inputs()
    observed = errors_by_hand(weight, x)
    assert 0.05 < observed["float32"] < 0.15  # NF4's rounding error: about a tenth of the output
    assert abs(observed["bfloat16"] / observed["float32"] - 1) < 0.1  # bf16 adds little: "about the same"
    check = checks.check_compute_dtype_experiment
    assert check(..., ..., weight, x).status == NOT_ATTEMPTED
    assert check("higher", ..., weight, x).status == NOT_ATTEMPTED  # a prediction alone is not an observation
    assert check("about the same", observed, weight, x).correct
    assert check("Same", observed, weight, x).correct
    wrong_prediction = check("higher", observed, weight, x)
    assert wrong_prediction.status == WRONG and "observation is right" in wrong_prediction.message
    assert "quadrature" in wrong_prediction.message
    assert "percentage" in check("about the same", {k: 100 * v for k, v in observed.items()}, weight, x).message
    swapped = {"float32": observed["float32"] * 2, "bfloat16": observed["bfloat16"]}
    assert "is not what the layer gives" in check("about the same", swapped, weight, x).message
    assert "dict" in check("about the same", [1, 2], weight, x).message
    assert check("maybe", observed, weight, x).status == WRONG
