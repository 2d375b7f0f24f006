"""What lessons 08 and 09 compute on a GPU, held on a CPU where a CPU can hold it.

A GPU profile stores a model's unquantized parts in its 16-bit compute dtype (fp16 or bf16):
these tests load the mini model (tests/mini_model.py) in such a dtype on the CPU and check
what the lessons' GPU branches rely on. Tolerances come from the dtype (torch.finfo) or
from a rounding measured in the same test, never from an fp32 run.
"""

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from mini_model import load_mini_model, mini_model_dir  # noqa: E402

from course_utils import quant  # noqa: E402
from course_utils.hardware import detect  # noqa: E402
from course_utils.qlora import (cpu_shortcut_layers, dequantize_weight, dequantized_equivalent,  # noqa: E402
                                four_bit_linear, four_bit_modules, lora_delta)


def nf4_mini(dtype, compute_dtype=None):
    model = load_mini_model(quantization="nf4", double_quant=True, device="cpu", dtype=dtype,
                            compute_dtype=compute_dtype or dtype)
    assert cpu_shortcut_layers(model) == 0
    return model


def lesson_08_bit_check(layer) -> bool:
    """Lesson 08's check: bitsandbytes' dequantized NF4 + DQ weight equals course_utils.quant's, bit for bit."""
    state = layer.weight.quant_state
    weight_bnb = bnb.functional.dequantize_4bit(layer.weight.data, state)
    codes = quant.unpack_4bit(layer.weight.data).reshape(state.shape)
    absmax = quant.dequantize_absmax(quant.DoubleQuantizedAbsmax(state.absmax, state.state2.absmax, state.offset,
                                                                 state.state2.blocksize))
    return torch.equal(quant.dequantize_4bit(codes, absmax, "nf4"), weight_bnb.float())


def test_lesson_08_bit_check_needs_fp32_storage():
    """Lesson 08 loads its CPU copy with dtype=float32 on a GPU; without it the weights were read in 16 bits."""
    fp32 = nf4_mini(torch.float32).model.layers[0].self_attn.q_proj
    assert lesson_08_bit_check(fp32)
    for dtype in (torch.bfloat16, torch.float16):  # what a GPU profile's default dtype gave
        sixteen = nf4_mini(dtype, compute_dtype=torch.float32).model.layers[0].self_attn.q_proj
        assert not lesson_08_bit_check(sixteen), dtype


@pytest.fixture(scope="module")
def bf16_qlora():
    """A mini NF4 + DQ model computing in bf16, as a GPU profile loads it, with a non-zero LoRA update."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(nf4_mini(torch.bfloat16), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return model.eval()


def test_dequantized_equivalent_rounds_the_merged_weight_once_to_the_requested_dtype(bf16_qlora):
    profile = detect()
    fp32 = dequantized_equivalent(bf16_qlora, profile, dtype=torch.float32, local_dir=mini_model_dir())
    bf16 = dequantized_equivalent(bf16_qlora, profile, dtype=torch.bfloat16, local_dir=mini_model_dir())
    half_step = torch.finfo(torch.bfloat16).eps / 2  # round to nearest: at most half a step, relative
    checked = 0
    for name, module in four_bit_modules(bf16_qlora):
        merged = dequantize_weight(module) + lora_delta(module)  # Q(W) + scaling B A in fp32
        exact, rounded = fp32.get_submodule(name).weight, bf16.get_submodule(name).weight
        assert exact.dtype == torch.float32 and rounded.dtype == torch.bfloat16
        assert torch.equal(exact, merged)  # the fp32 equivalent is the merge itself
        assert torch.equal(rounded, merged.bfloat16())  # the bf16 one rounds it once
        assert ((rounded.float() - merged).abs() <= half_step * merged.abs()).all()
        checked += 1
    assert checked == 7 * 2


def test_lesson_09_merge_assertion_allows_16_bit_rounding_and_still_catches_a_lost_update(bf16_qlora):
    """Lesson 09's "(a) is exact up to rounding", on a model computing in bf16 as on a GPU.

    The unmerged model rounds Q(W) and the adapter's output apart; the merged one rounds their sum: in bf16 they
    differ by rounding. The lesson allows twice the rounding that bf16 alone adds to the merge (measured against
    the same merge in fp32). A merge that loses the update (adapter_name=None) must still fail.
    """
    profile = detect()
    ids = torch.tensor([[1, 520, 3000, 77, 9, 12000, 42, 4242]])

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids).logits.float()

    def distance(a, b):
        return (a - b).abs().mean().item()

    reference = logits(bf16_qlora)
    with bf16_qlora.disable_adapter():
        off = distance(logits(bf16_qlora), reference)
    merged = {dtype: logits(dequantized_equivalent(bf16_qlora, profile, dtype=dtype, local_dir=mini_model_dir()))
              for dtype in (torch.bfloat16, torch.float32)}
    lost = logits(dequantized_equivalent(bf16_qlora, profile, adapter_name=None, dtype=torch.bfloat16,
                                         local_dir=mini_model_dir()))
    rounding = distance(merged[torch.bfloat16], merged[torch.float32])
    assert 0 < rounding and 0.01 * off + 2 * rounding < 0.5 * off  # the lesson's allowance stays below the adapter's effect
    moved = distance(merged[torch.bfloat16], reference)
    assert moved > 0.01 * off  # the allowance calibrated in fp32 alone fails here (the defect this fixes)
    assert 0 < moved < 0.01 * off + 2 * rounding  # the lesson's assertion holds in bf16...
    assert distance(lost, reference) > 0.01 * off + 2 * rounding  # ...and fails when the update is lost
    assert distance(merged[torch.float32], reference) < 0.01 * off + 2 * rounding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_four_bit_linear_on_a_cuda_weight_stays_on_the_gpu():
    """Lesson 09's W - Q(W) and its re-quantized codes, with W from a model on the GPU."""
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)).cuda()
    layer = four_bit_linear(weight, "nf4", True)
    assert layer.weight.device.type == "cuda"
    error = weight - dequantize_weight(layer)  # raised a device mismatch when the layer was built on the CPU
    assert error.device.type == "cuda" and 0 < error.norm() < 0.2 * weight.norm()
    on_cpu = four_bit_linear(weight.cpu(), "nf4", True)
    same = (quant.unpack_4bit(layer.weight.data).cpu() == quant.unpack_4bit(on_cpu.weight.data)).float().mean()
    assert same > 0.99  # the CUDA and CPU kernels pick the same codes (up to ties)
