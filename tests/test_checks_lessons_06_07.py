"""Self-checks of lessons 06 and 07: placeholder, typical wrong answers, right answer."""

import torch

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG
from course_utils.quant import nf4_table

X = [0.5, -1.2, 3.0, 0.1, -2.9]


def test_int4_absmax_codes():
    scale = 3.0 / 7
    right = [round(v / scale) for v in X]
    assert checks.check_int4_absmax_codes(..., X).status == NOT_ATTEMPTED
    assert checks.check_int4_absmax_codes(right, X).correct
    assert checks.check_int4_absmax_codes(torch.tensor(right, dtype=torch.int8), X).correct
    int8 = [round(v / (3.0 / 127)) for v in X]
    assert "int8" in checks.check_int4_absmax_codes(int8, X).message
    truncated = [int(v / scale) for v in X]
    assert "truncated" in checks.check_int4_absmax_codes(truncated, X).message
    assert "max|x|/8" in checks.check_int4_absmax_codes([round(v / (3.0 / 8)) for v in X], X).message
    assert checks.check_int4_absmax_codes(right[:3], X).status == WRONG
    assert checks.check_int4_absmax_codes("codes", X).status == WRONG


def test_zeropoint_params():
    x = [-0.5, 0.0, 1.0, 2.5]
    scale, zero_point = 3.0 / 255, round(0.5 / (3.0 / 255))
    assert checks.check_zeropoint_params(..., x).status == NOT_ATTEMPTED
    assert checks.check_zeropoint_params((scale, zero_point), x).correct
    assert checks.check_zeropoint_params((torch.tensor(scale), torch.tensor(float(zero_point))), x).correct
    assert "255" in checks.check_zeropoint_params((3.0 / 256, zero_point), x).message
    assert "absmax" in checks.check_zeropoint_params((2.5 / 127, zero_point), x).message
    assert "sign" in checks.check_zeropoint_params((scale, -zero_point), x).message
    assert "pair" in checks.check_zeropoint_params(scale, x).message


def test_blockwise_bits():
    assert checks.check_blockwise_bits(..., 8, 64).status == NOT_ATTEMPTED
    assert checks.check_blockwise_bits(8.5, 8, 64).correct
    assert "scale" in checks.check_blockwise_bits(8, 8, 64).message
    assert "spread" in checks.check_blockwise_bits(40, 8, 64).message
    assert "16-bit" in checks.check_blockwise_bits(8.25, 8, 64).message
    assert checks.check_blockwise_bits(9, 8, 64).status == WRONG


def test_nf4_codes():
    block = torch.tensor([0.9, -0.45, 0.02, -0.9, 0.3])
    table = nf4_table()
    scaled = block / 0.9
    right = (scaled[:, None] - table).abs().argmin(1)  # independent: nearest level (no value on a boundary here)
    assert checks.check_nf4_codes(..., block).status == NOT_ATTEMPTED
    assert checks.check_nf4_codes(right, block).correct
    assert checks.check_nf4_codes(right.tolist(), block).correct
    assert "signed" in checks.check_nf4_codes(right - 7, block).message
    unscaled = (block[:, None] - table).abs().argmin(1)
    assert "absmax" in checks.check_nf4_codes(unscaled, block).message
    assert "16" in checks.check_nf4_codes(right + 10, block).message
    assert checks.check_nf4_codes([1, 2], block).status == WRONG


def test_dq_bits():
    right = 4 + 8 / 128 + 32 / (128 * 256)
    assert checks.check_dq_bits(..., 128).status == NOT_ATTEMPTED
    assert checks.check_dq_bits(right, 128).correct
    assert "without double quantization" in checks.check_dq_bits(4 + 32 / 128, 128).message
    assert "256" in checks.check_dq_bits(4 + 8 / 128, 128).message
    assert "block size 64" in checks.check_dq_bits(4 + 8 / 64 + 32 / (64 * 256), 128).message
    assert checks.check_dq_bits(4.5, 128).status == WRONG


def test_nf4_dequantized():
    codes, absmax = [0, 7, 15, 12], 0.25
    table = nf4_table()
    right = table[torch.tensor(codes)] * absmax
    assert checks.check_nf4_dequantized(..., codes, absmax).status == NOT_ATTEMPTED
    assert checks.check_nf4_dequantized(right, codes, absmax).correct
    assert checks.check_nf4_dequantized(right.tolist(), codes, absmax).correct
    assert "multiply" in checks.check_nf4_dequantized(table[torch.tensor(codes)], codes, absmax).message
    assert "index" in checks.check_nf4_dequantized(torch.tensor(codes) * absmax, codes, absmax).message
    assert "don't divide" in checks.check_nf4_dequantized(table[torch.tensor(codes)] / absmax, codes, absmax).message


def test_bits_experiment():
    from course_utils import quant

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))

    def error(bits):
        w_hat = quant.blockwise_absmax_dequantize(*quant.blockwise_absmax_quantize(w, 64, bits))
        return ((w_hat - w).norm() / w.norm()).item()

    ratio = error(3) / error(4)
    check = checks.check_bits_experiment
    assert check(..., ..., w).status == NOT_ATTEMPTED
    assert check(2.3, ..., w).status == NOT_ATTEMPTED
    assert check(7 / 3, ratio, w).correct
    assert check(torch.tensor(2.4), torch.tensor(ratio), w).correct
    for guess, hint in [(2, "does not simply double"), (0.5, "cannot shrink"), (16, "you predicted 16")]:
        feedback = check(guess, ratio, w)  # right observation, wrong prediction: the mechanism
        assert feedback.status == WRONG and hint in feedback.message and "7 for int4, 3 for int3" in feedback.message
    for observed, hint in [(1 / ratio, "divide int3's"), (error(3), "one relative error"), (3.0, "not the measured")]:
        feedback = check(7 / 3, observed, w)  # wrong observation
        assert feedback.status == WRONG and hint in feedback.message, feedback.message


def test_format_experiment():
    from course_utils import quant

    uniform = torch.rand(64, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    normal = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))

    def errors(w):
        roundtrips = {"Int4": quant.blockwise_absmax_dequantize(*quant.blockwise_absmax_quantize(w, 64, bits=4)),
                      "FP4": quant.dequantize_4bit(*quant.quantize_4bit(w, 64, "fp4"), "fp4"),
                      "NF4": quant.dequantize_4bit(*quant.quantize_4bit(w, 64, "nf4"), "nf4")}
        return {label: ((w_hat - w).norm() / w.norm()).item() for label, w_hat in roundtrips.items()}

    measured = errors(uniform)
    assert min(measured, key=measured.get) == "Int4"  # the fixture shows what the exercise is about
    check = checks.check_format_experiment
    assert check(..., ..., uniform).status == NOT_ATTEMPTED
    assert check("NF4", ..., uniform).status == NOT_ATTEMPTED
    assert check("Int4", measured, uniform).correct
    assert check("int4", {k.lower(): torch.tensor(v) for k, v in measured.items()}, uniform).correct
    for guess in ("NF4", "fp4"):
        feedback = check(guess, measured, uniform)  # right observation, wrong prediction: the mechanism
        assert feedback.status == WRONG and "Int4 wins" in feedback.message and "flatter" in feedback.message
    on_normal = errors(normal)
    assert check("NF4", on_normal, normal).correct
    assert "close to a normal" in check("Int4", on_normal, normal).message
    swapped = measured | {"Int4": measured["NF4"], "NF4": measured["Int4"]}
    assert "NF4's error" in check("Int4", swapped, uniform).message  # wrong observations
    assert "missing" in check("Int4", {"Int4": measured["Int4"]}, uniform).message
    assert "is not the relative error" in check("Int4", measured | {"FP4": 0.5}, uniform).message
    assert "dict" in check("Int4", 0.07, uniform).message
    assert "not one of" in check("INT8", measured, uniform).message
