"""Self-checks of Lesson 06: quantization basics (int4 absmax codes, zero-point parameters, the cost of block scales)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _q_number, _q_tensor, run_check


def check_int4_absmax_codes(answer: Any, x: Any) -> Feedback:
    """Lesson 06: the int4 absmax codes of x (one scale for the whole tensor, codes -7..7)."""
    x = _torch.as_tensor(x, dtype=_torch.float32).reshape(-1)
    scale = x.abs().max() / 7
    expected = _torch.round(x / scale)

    def find_problem(a):
        codes = _q_tensor(a).float()
        if codes.numel() != x.numel():
            return f"expected {x.numel()} codes, one per value of x, got {codes.numel()}."
        if _torch.equal(codes, expected):
            return None
        if _torch.equal(codes, _torch.round(x / (x.abs().max() / 8))):
            return "the scale is max|x|/7 (codes -7..7, so 0 sits in the middle), not max|x|/8."
        if codes.abs().max() > 7:
            if _torch.equal(codes, _torch.round(x / (x.abs().max() / 127))):
                return "those are int8 codes (scale max|x|/127); int4 keeps 4 bits, so the scale is max|x|/7."
            return "int4 absmax codes lie in -7..7; divide by the scale max|x|/7 before rounding."
        if not _torch.equal(codes, codes.round()):
            return "codes are whole numbers: round x / scale to the nearest integer."
        if _torch.equal(codes, _torch.trunc(x / scale)) or _torch.equal(codes, _torch.floor(x / scale)):
            return "you truncated (or floored) x / scale; round to the nearest integer instead."
        return "not the codes: scale = max|x| / 7, codes = round(x / scale)."

    return run_check("int4 absmax codes", answer, find_problem,
                     success=f"correct: {expected.to(_torch.int8).tolist()}.")


def check_zeropoint_params(answer: Any, x: Any, bits: int = 8) -> Feedback:
    """Lesson 06: (scale, zero_point) of asymmetric quantization of x with `bits` bits."""
    x = _torch.as_tensor(x, dtype=_torch.float32).reshape(-1)
    qmax = 2**bits - 1
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / qmax
    zero_point = round(-low / scale)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (scale, zero_point)."
        s, z = _q_number(a[0]), _q_number(a[1])
        scale_ok = _math.isclose(s, scale, rel_tol=1e-4)
        if scale_ok and z == zero_point:
            return None
        if _math.isclose(s, (high - low) / 2**bits, rel_tol=1e-4):
            return f"the scale divides the range by the number of steps, 2^{bits} - 1 = {qmax}, not by 2^{bits}."
        if _math.isclose(s, max(abs(low), abs(high)) / (2 ** (bits - 1) - 1), rel_tol=1e-4):
            return "that is the absmax (symmetric) scale; zero-point quantization spreads max - min over all codes."
        if not scale_ok:
            return f"the scale should be (max - min) / {qmax}."
        if z == -zero_point:
            return "wrong sign: the zero point is round(-min / scale), the code that stands for 0.0."
        if z != round(z):
            return "the zero point is an integer code: round(-min / scale)."
        return "the scale is right; the zero point is round(-min / scale)."

    return run_check("zero-point parameters", answer, find_problem,
                     success=f"correct: scale {scale:.6g}, zero point {zero_point}.")


def check_blockwise_bits(answer: Any, bits: int, block_size: int, scale_bits: int = 32) -> Feedback:
    """Lesson 06: stored bits per value of block-wise absmax quantization (codes + one scale per block)."""
    expected = bits + scale_bits / block_size

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=1e-6):
            return None
        if _math.isclose(value, bits):
            return "the codes are only part of it: each block also stores its scale."
        if _math.isclose(value, bits + scale_bits):
            return "the scale is shared by the whole block: spread its bits over block_size values."
        if _math.isclose(value, bits + 16 / block_size):
            return f"the scales here are {scale_bits}-bit floats, not 16-bit ones."
        return "bits per value = bits per code + bits of one scale / block size."

    return run_check("bits per value", answer, find_problem, success=f"correct: {expected:g} bits per value.")


def check_bits_experiment(prediction: Any, observed: Any, w: Any, block_size: int = 64, bits: int = 4,
                          fewer_bits: int = 3) -> Feedback:
    """Experiment: int4 -> int3 at the same block size; predict, then measure the ratio of the relative errors."""
    from ..quant import blockwise_absmax_dequantize, blockwise_absmax_quantize
    from .lesson_01 import _predict_observe

    w = _torch.as_tensor(w).detach().float().cpu()

    def error(b: int) -> float:
        w_hat = blockwise_absmax_dequantize(*blockwise_absmax_quantize(w, block_size, b))
        return ((w_hat - w).norm() / w.norm()).item()

    e_more, e_fewer = error(bits), error(fewer_bits)
    ratio = e_fewer / e_more
    steps_more, steps_fewer = 2 ** (bits - 1) - 1, 2 ** (fewer_bits - 1) - 1
    why = (f"absmax int-b keeps 2^(b-1) - 1 steps on each side of zero: {steps_more} for int{bits}, {steps_fewer} "
           f"for int{fewer_bits}. The step absmax / {steps_fewer} is {steps_more / steps_fewer:.2f} times "
           f"absmax / {steps_more}, and the rounding error, a fraction of a step, grows with it.")

    def judge(prediction, observed):
        value = _q_number(observed)
        if not _math.isclose(value, ratio, rel_tol=1e-3):
            if _math.isclose(value, 1 / ratio, rel_tol=1e-3):
                return f"that is int{bits}'s error over int{fewer_bits}'s; divide int{fewer_bits}'s by int{bits}'s."
            if _math.isclose(value, e_fewer, rel_tol=1e-3) or _math.isclose(value, e_more, rel_tol=1e-3):
                return f"that is one relative error; the observation is int{fewer_bits}'s divided by int{bits}'s."
            return (f"{value:.4g} is not the measured ratio: compute ||W_hat - W|| / ||W|| with bits={fewer_bits} and "
                    f"with bits={bits}, both with block_size={block_size}, and divide.")
        guess = _q_number(prediction)
        if abs(guess / ratio - 1) <= 0.1:
            return None
        if _math.isclose(guess, 2.0, rel_tol=0.05):
            return (f"close, but one bit fewer does not simply double the error: you measured {ratio:.2f}. "
                    f"{why} (Symmetric codes -{steps_fewer}..{steps_fewer} leave one of the "
                    f"{2 ** fewer_bits} codes unused.)")
        if guess < 1:
            return f"fewer bits cannot shrink the error: you measured {ratio:.2f} times as much. {why}"
        return f"you predicted {guess:.3g}, you measured {ratio:.2f}. {why}"

    return _predict_observe(
        "bits experiment", prediction, observed, judge,
        success=f"correct: int{fewer_bits} has {ratio:.2f} times int{bits}'s error ({steps_more}/{steps_fewer} = "
                f"{steps_more / steps_fewer:.2f}): the error follows the step size.")
