"""course_utils.quant: bit-exact with bitsandbytes on the CPU, tables, bit accounting, errors."""

import math

import pytest
import torch

from course_utils import quant as Q

F = pytest.importorskip("bitsandbytes.functional")

# Row lengths are multiples of the block size: bitsandbytes 0.50.2's CPU dequantize
# kernel is wrong for blocks that straddle rows (its pure-PyTorch path and ours agree).
SHAPES_AND_BLOCKS = [((256, 512), 64), ((192, 576), 64), ((64, 1536), 32), ((128, 256), 128), ((32, 4096), 4096)]


def random_weights(shape, seed=0, scale=0.02):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator) * scale
    w.view(-1)[:64] = 0.0  # an all-zero block
    w.view(-1)[100] = 40 * scale  # an outlier
    return w


# ---- tables -------------------------------------------------------------------------

def test_nf4_table_is_bitsandbytes_table_bit_for_bit():
    assert torch.equal(Q.nf4_table(), F.get_4bit_type("nf4", device="cpu"))


def test_nf4_table_properties_from_the_definition():
    table = Q.nf4_table(Q.NF4_OFFSET)
    assert table.numel() == 16 and torch.all(table[1:] > table[:-1])
    assert table[0] == -1 and table[-1] == 1 and (table == 0).sum() == 1
    assert (table > 0).sum() == 8 and (table < 0).sum() == 7
    # the unrounded offset moves the levels by a few float32 rounding steps of 1.0, no more
    assert (table - F.get_4bit_type("nf4", device="cpu")).abs().max() <= 3 * torch.finfo(torch.float32).eps
    # positive levels are normal quantiles: Phi(level * scale) is evenly spaced
    top = torch.special.ndtri(torch.tensor(Q.NF4_OFFSET, dtype=torch.float64))
    probs = torch.special.ndtr(table[8:].double() * top)
    assert torch.allclose(probs.diff(), probs.diff()[0].expand(7), atol=1e-6)


def test_fp4_table_matches_bitsandbytes_in_code_order():
    table = Q.fp4_table()
    assert torch.equal(table, F.get_4bit_type("fp4", device="cpu"))
    assert torch.equal(table[8:], -table[:8])  # bit 3 is the sign


def test_dynamic_map_matches_bitsandbytes():
    code = Q.dynamic_map_8bit()
    assert torch.equal(code, F.create_dynamic_map(signed=True))
    assert code.numel() == 256 and torch.all(code[1:] >= code[:-1])


def test_int4_levels_are_uniform():
    levels = Q.int4_levels()
    assert levels.numel() == 15 and torch.allclose(levels.diff(), torch.full((14,), 1 / 7))


# ---- 4-bit quantization vs bitsandbytes ----------------------------------------------

@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape,block_size", SHAPES_AND_BLOCKS)
def test_quantize_4bit_is_bit_exact_with_bitsandbytes(quant_type, shape, block_size):
    w = random_weights(shape)
    packed, state = F.quantize_4bit(w, blocksize=block_size, quant_type=quant_type)
    codes, absmax = Q.quantize_4bit(w, block_size, quant_type)
    assert codes.dtype == torch.uint8 and codes.shape == w.shape and int(codes.max()) <= 15
    assert torch.equal(Q.pack_4bit(codes), packed)
    assert torch.equal(Q.unpack_4bit(packed), codes.reshape(-1))
    assert torch.equal(absmax, state.absmax)
    assert torch.equal(Q.dequantize_4bit(codes, absmax, quant_type), F.dequantize_4bit(packed, state))


def test_bf16_input_is_quantized_like_bitsandbytes():
    w = random_weights((64, 256)).to(torch.bfloat16)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
    codes, absmax = Q.quantize_nf4(w)
    assert torch.equal(Q.pack_4bit(codes), packed) and torch.equal(absmax, state.absmax)


def test_dequantized_values_are_table_times_absmax_and_error_is_bounded():
    w = random_weights((128, 512))
    codes, absmax = Q.quantize_nf4(w)
    w_hat = Q.dequantize_nf4(codes, absmax)
    blocks, hat = w.reshape(-1, 64), w_hat.reshape(-1, 64)
    # the largest gap between NF4 levels is 1 - 0.7229..., so no value moves more than half of it
    half_gap = (Q.nf4_table().diff().max() / 2).item()
    assert torch.all((hat - blocks).abs() <= half_gap * absmax[:, None] + 1e-7)
    assert torch.equal(hat.abs().amax(1), absmax)  # the absmax value itself is exact (level +-1)
    assert torch.all(w_hat.view(-1)[:64] == 0)  # a zero block stays zero


def test_nearest_after_division_can_disagree_but_midpoints_do_not():
    """The lesson's point: both rules are 'nearest', only the midpoint one is bitsandbytes' arithmetic."""
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(3))
    packed, _ = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
    reference = Q.unpack_4bit(packed)
    codes, _ = Q.quantize_nf4(w)
    assert torch.equal(codes.reshape(-1), reference)
    blocks = w.reshape(-1, 64)
    scaled = (blocks / blocks.abs().amax(1, keepdim=True)).reshape(-1)
    nearest = (scaled[:, None] - Q.nf4_table()).abs().argmin(1)
    assert (nearest != reference).sum() <= 10  # a handful at most; differences are at decision boundaries


# ---- double quantization vs bitsandbytes ---------------------------------------------

@pytest.mark.parametrize("shape,block_size", [((1024, 1024), 64), ((576, 576), 64), ((192, 576), 64), ((256, 512), 32)])
def test_double_quantization_matches_bitsandbytes_nested_state(shape, block_size):
    w = random_weights(shape, seed=1)
    packed, state = F.quantize_4bit(w, blocksize=block_size, quant_type="nf4", compress_statistics=True)
    codes, absmax = Q.quantize_nf4(w, block_size)
    dq = Q.double_quantize_absmax(absmax)
    assert torch.equal(Q.pack_4bit(codes), packed)
    assert torch.equal(dq.codes, state.absmax)
    assert torch.equal(dq.nested_absmax, state.state2.absmax)
    assert torch.equal(dq.offset, state.offset)
    assert state.state2.blocksize == dq.block_size == 256
    assert torch.equal(Q.dequantize_4bit(codes, Q.dequantize_absmax(dq)), F.dequantize_4bit(packed, state))


def test_double_quantization_with_nearest_rounding_is_close_but_not_identical():
    absmax = torch.rand(20_000, generator=torch.Generator().manual_seed(2)) + 0.5
    table_dq = Q.double_quantize_absmax(absmax)
    nearest_dq = Q.double_quantize_absmax(absmax, rounding="nearest")
    differ = (table_dq.codes != nearest_dq.codes)
    assert 0 < differ.sum() < 0.01 * absmax.numel()
    assert (table_dq.codes.long() - nearest_dq.codes.long()).abs().max() == 1
    # nearest rounding is better on the values where the two differ (up to float32 rounding)
    err_table = (Q.dequantize_absmax(table_dq) - absmax).abs()[differ]
    err_nearest = (Q.dequantize_absmax(nearest_dq) - absmax).abs()[differ]
    assert err_nearest.sum() < err_table.sum() and torch.all(err_nearest <= err_table + 1e-6)


def test_double_quantization_handles_a_short_last_block():
    absmax = torch.rand(300) + 0.1
    dq = Q.double_quantize_absmax(absmax)
    assert dq.codes.numel() == 300 and dq.nested_absmax.numel() == 2
    centred = absmax - absmax.mean()
    assert dq.nested_absmax[1] == centred[256:].abs().max()
    assert (Q.dequantize_absmax(dq) - absmax).abs().max() < 0.01


# ---- bits per parameter ---------------------------------------------------------------

def test_bits_per_parameter_formulas():
    n = 4096 * 4096
    assert Q.bits_per_parameter(n) == 4.5
    expected_dq = 4 + 8 / 64 + (n // 64 // 256) * 32 / n + 32 / n
    assert math.isclose(Q.bits_per_parameter(n, double_quant=True), expected_dq)
    assert abs(Q.bits_per_parameter(n, double_quant=True) - 4.127) < 1e-3


@pytest.mark.parametrize("double_quant", [False, True])
def test_bits_per_parameter_equals_bitsandbytes_stored_tensors(double_quant):
    w = random_weights((1024, 1024))
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    tensors = [packed, state.absmax] + ([state.state2.absmax, state.offset] if double_quant else [])
    stored = Q.stored_bits_per_parameter(tensors, w.numel())
    assert math.isclose(stored, Q.bits_per_parameter(w.numel(), double_quant=double_quant))


# ---- lesson 06 integer quantization -------------------------------------------------------

def test_absmax_int8_roundtrip_error_is_at_most_half_a_step():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    codes, scale = Q.absmax_quantize(x, bits=8)
    assert codes.dtype == torch.int8 and codes.abs().max() == 127
    assert (Q.absmax_dequantize(codes, scale) - x).abs().max() <= scale / 2 + 1e-7


def test_zeropoint_uses_every_code_and_keeps_zero_exact():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 3 - 0.5
    codes, scale, zero_point = Q.zeropoint_quantize(x, bits=8)
    assert codes.dtype == torch.uint8 and codes.min() == 0 and codes.max() == 255
    assert (Q.zeropoint_dequantize(codes, scale, zero_point) - x).abs().max() <= scale / 2 + 1e-6
    zero_codes, *_ = Q.zeropoint_quantize(torch.cat([x, torch.zeros(1)]), bits=8)
    assert Q.zeropoint_dequantize(zero_codes[-1:], scale, zero_point).item() == 0.0


def test_blockwise_confines_an_outlier_to_its_block():
    x = torch.randn(64 * 32, generator=torch.Generator().manual_seed(0))
    codes, scales = Q.blockwise_absmax_quantize(x, 64, bits=4)
    before = (Q.blockwise_absmax_dequantize(codes, scales) - x).abs()
    y = x.clone()
    y[5 * 64 + 3] = 100.0
    codes, scales = Q.blockwise_absmax_quantize(y, 64, bits=4)
    after = (Q.blockwise_absmax_dequantize(codes, scales) - y).abs()
    changed = (after != before).nonzero().flatten()
    assert changed.min() >= 5 * 64 and changed.max() < 6 * 64


def test_per_tensor_block_equals_absmax_quantize():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    codes, scales = Q.blockwise_absmax_quantize(x, x.numel(), bits=8)
    ref_codes, ref_scale = Q.absmax_quantize(x, bits=8)
    assert torch.equal(codes, ref_codes) and torch.equal(scales[0], ref_scale)


# ---- errors ----------------------------------------------------------------------------------

def test_unknown_quant_type_names_the_valid_ones():
    with pytest.raises(ValueError, match="nf4.*fp4"):
        Q.quantize_4bit(torch.randn(64), 64, "int3")


@pytest.mark.parametrize("block_size", [16, 48, 100, 8192])
def test_unsupported_block_size_is_rejected(block_size):
    with pytest.raises(ValueError, match="not supported"):
        Q.quantize_nf4(torch.randn(8192 * 2), block_size)
    if block_size not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        with pytest.raises(ValueError):
            F.quantize_4bit(torch.randn(8192 * 2), blocksize=block_size, quant_type="nf4")


def test_size_not_a_multiple_of_the_block_is_not_padded_silently():
    with pytest.raises(ValueError, match="not a multiple of block_size=64"):
        Q.quantize_nf4(torch.randn(100), 64)
    with pytest.raises(ValueError, match="not a multiple"):
        Q.blockwise_absmax_quantize(torch.randn(100), 64)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="floating-point"):
        Q.quantize_nf4(torch.arange(64))
    with pytest.raises(ValueError, match="bits"):
        Q.absmax_quantize(torch.randn(10), bits=1)
    with pytest.raises(ValueError, match="rounding"):
        Q.double_quantize_absmax(torch.rand(10), rounding="stochastic")
    with pytest.raises(ValueError, match="0..15"):
        Q.pack_4bit(torch.tensor([3, 16], dtype=torch.uint8))
