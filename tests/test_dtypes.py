"""Dtype guards: the helpers lessons use for bit checks behave under fp16 and bf16 weights, on the CPU.

A GPU loads the course's model in fp16 (T4) or bf16 (Ampere+). CI has no GPU,
so these tests feed the same helpers 16-bit tensors on the CPU: a helper that
silently assumes fp32 breaks here, not in a learner's Colab. Tolerances come
from the dtype (`torch.finfo(dtype).eps`), never from fp32 alone.
"""

import pytest
import torch
import bitsandbytes.functional as F

from course_utils import quant

DTYPES = [torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def weight():
    return torch.randn(256, 512, generator=torch.Generator().manual_seed(0)) * 0.05


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_codes_scales_and_values_equal_bitsandbytes_for_16bit_weights(weight, dtype, quant_type):
    w = weight.to(dtype)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type=quant_type)
    codes, absmax = quant.quantize_4bit(w, 64, quant_type)
    assert torch.equal(quant.unpack_4bit(packed), codes.view(-1))
    assert torch.equal(state.absmax, absmax)
    theirs, ours = F.dequantize_4bit(packed, state), quant.dequantize_4bit(codes, absmax, quant_type)
    assert theirs.dtype == dtype and ours.dtype == torch.float32  # ours returns fp32: cast before comparing
    assert torch.equal(theirs, ours.to(dtype))
    # the codes depend on the values, not on the dtype that holds them
    assert torch.equal(quant.quantize_4bit(w.float(), 64, quant_type)[0], codes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_double_quantization_and_stored_bits_for_16bit_weights(weight, dtype):
    w = weight.to(dtype)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    dq = quant.double_quantize_absmax(quant.quantize_4bit(w, 64, "nf4")[1])
    assert torch.equal(dq.codes, state.absmax) and torch.equal(dq.nested_absmax, state.state2.absmax)
    assert torch.equal(dq.offset, state.offset)
    bits = quant.stored_bits_per_parameter([packed, state.absmax, state.state2.absmax, state.offset], w.numel())
    assert bits == quant.bits_per_parameter(w.numel(), 64, double_quant=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blockwise_integer_quantization_error_is_bounded_by_half_a_step(weight, dtype):
    w = weight.to(dtype)
    codes, scales = quant.blockwise_absmax_quantize(w, 64, bits=8)
    error = (quant.blockwise_absmax_dequantize(codes, scales) - w.float()).abs().reshape(-1, 64)
    # half a step per block, plus the rounding of the fp32 product codes x scale (relative to the value)
    allowance = scales[:, None] / 2 + 2 * torch.finfo(torch.float32).eps * w.float().abs().reshape(-1, 64)
    assert (error <= allowance).all()
    assert torch.equal(codes, quant.blockwise_absmax_quantize(w.float(), 64, bits=8)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_helper_accepts_16bit_tensors(weight, dtype):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    quant.plot_histogram_with_levels(ax, weight.to(dtype), quant.nf4_table(), normal_fit=True)
    assert len(ax.patches) > 0
    plt.close(fig)


@pytest.mark.parametrize("dtype", DTYPES)
def test_answer_loss_of_a_16bit_model_is_close_to_fp32(dtype):
    from course_utils.data import load_examples
    from course_utils.models import load_model, load_tokenizer
    from course_utils.answers import answer_loss

    tokenizer, examples = load_tokenizer(), load_examples("sql", "validation", limit=2)  # 16-bit matmuls are slow on some CPUs
    reference = answer_loss(load_model(dtype=torch.float32, device="cpu"), tokenizer, examples)
    value = answer_loss(load_model(dtype=dtype, device="cpu"), tokenizer, examples)
    # 30 layers of 16-bit rounding move a loss of about 1 by far less than this; a wrong cast by far more
    assert abs(value - reference) < 200 * torch.finfo(dtype).eps * reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_layer_equals_peft_on_16bit_weights(dtype, use_rslora):
    """Lesson 03's layer and PEFT's compute the same bits when the base layer is fp16 or bf16."""
    import copy
    from collections import OrderedDict

    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from torch import nn

    from course_utils.lora import LoraLinear

    torch.manual_seed(0)
    base = nn.Linear(64, 48).to(dtype)
    ours = LoraLinear(copy.deepcopy(base), r=4, lora_alpha=8, use_rslora=use_rslora)
    assert ours.lora_A.dtype == torch.float32  # adapters stay fp32 on a 16-bit base, as in PEFT
    nn.init.normal_(ours.lora_B, std=0.02)
    peft_model = get_peft_model(nn.Sequential(OrderedDict(proj=copy.deepcopy(base))),
                                PeftLoraConfig(r=4, lora_alpha=8, target_modules=["proj"], use_rslora=use_rslora))
    theirs = peft_model.base_model.model.proj
    assert theirs.lora_A["default"].weight.dtype == torch.float32
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(5, 64).to(dtype)
    with torch.no_grad():
        out_ours, out_theirs = ours(x), peft_model(x)
    assert out_ours.dtype == out_theirs.dtype == dtype
    assert torch.equal(out_ours, out_theirs)
    # merging: the same merged weight, and outputs within the dtype's rounding of the unmerged ones
    ours.merge()
    theirs.merge()
    assert torch.equal(ours.base_layer.weight, theirs.base_layer.weight)
    with torch.no_grad():
        merged_out = ours(x)
    tolerance = 4 * torch.finfo(dtype).eps * out_ours.abs().max().item()
    assert (merged_out.float() - out_ours.float()).abs().max().item() <= tolerance
