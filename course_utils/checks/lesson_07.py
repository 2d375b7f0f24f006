"""Self-checks of Lesson 07: NF4 from scratch (codes by hand, double-quantization bits, dequantizing)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _q_number, _q_tensor, run_check


def check_nf4_codes(answer: Any, block: Any) -> Feedback:
    """Lesson 07: the NF4 codes (0..15) bitsandbytes gives the values of one block."""
    from ..quant import decision_midpoints, nf4_table

    block = _torch.as_tensor(block, dtype=_torch.float32).reshape(-1)
    table = nf4_table()
    midpoints, _ = decision_midpoints(table)
    scaled = block * (1.0 / block.abs().max())
    expected = _torch.searchsorted(midpoints, scaled, side="left")

    def find_problem(a):
        codes = _q_tensor(a).long()
        if codes.numel() != block.numel():
            return f"expected {block.numel()} codes, one per value, got {codes.numel()}."
        if _torch.equal(codes, expected):
            return None
        if codes.min() < 0:
            if _torch.equal(codes + 7, expected):
                return "codes are indices into the sorted table, 0..15 (code 7 is 0.0), not signed numbers."
            return "codes are indices 0..15 into the sorted NF4 table; none is negative."
        if codes.max() > 15:
            return "there are only 16 NF4 levels: codes are 0..15."
        if _torch.equal(codes, _torch.searchsorted(midpoints, block, side="left")):
            return "divide the block by its absmax first: the table spans [-1, 1]."
        return "scale by 1/absmax, then take the index of the nearest level of nf4_table()."

    return run_check("NF4 codes", answer, find_problem, success=f"correct: {expected.tolist()}.")


def check_dq_bits(answer: Any, block_size: int, nested_block_size: int = 256) -> Feedback:
    """Lesson 07: bits per parameter of NF4 with double quantization for a large matrix."""
    expected = 4 + 8 / block_size + 32 / (block_size * nested_block_size)

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=2e-4):
            return None
        if _math.isclose(value, 4 + 32 / block_size, rel_tol=2e-4):
            return "that is without double quantization: with DQ each block scale costs 8 bits, not 32."
        if _math.isclose(value, 4 + 8 / block_size, rel_tol=2e-4):
            return "almost: the 8-bit scales need their own fp32 scale, one per block of 256 scales."
        if _math.isclose(value, 4 + 8 / 64 + 32 / (64 * 256), rel_tol=2e-4) and block_size != 64:
            return f"that is the figure for block size 64; redo it for block size {block_size}."
        return "bits = 4 + 8 / block_size + 32 / (block_size * 256)."

    return run_check("bits with double quantization", answer, find_problem,
                     success=f"correct: {expected:.4f} bits per parameter.")


def check_nf4_dequantized(answer: Any, codes: Any, absmax: Any) -> Feedback:
    """Lesson 07: the values that NF4 codes of one block stand for."""
    from ..quant import nf4_table

    codes = _torch.as_tensor(codes).long().reshape(-1)
    absmax = float(_q_number(absmax))
    table = nf4_table()
    expected = table[codes] * absmax

    def find_problem(a):
        values = _q_tensor(a).float()
        if values.numel() != codes.numel():
            return f"expected {codes.numel()} values, one per code, got {values.numel()}."
        if _torch.allclose(values, expected, rtol=1e-5, atol=1e-7):
            return None
        if _torch.allclose(values, table[codes], rtol=1e-5, atol=1e-7):
            return "those are the table entries; multiply by the block's absmax to undo the scaling."
        if _torch.allclose(values, codes.float() * absmax, rtol=1e-5):
            return "a code is an index into nf4_table(), not the value itself: look it up first."
        if _torch.allclose(values, table[codes] / absmax, rtol=1e-5):
            return "multiply by absmax (quantizing divided by it); don't divide again."
        return "dequantized value = nf4_table()[code] * absmax."

    return run_check("NF4 dequantized", answer, find_problem, success=f"correct: {expected.tolist()}.")


_FORMATS = {"Int4": ("int4", "int 4"), "FP4": ("fp4", "fp 4"), "NF4": ("nf4", "nf 4")}


def check_format_experiment(prediction: Any, observed: Any, matrix: Any, block_size: int = 64) -> Feedback:
    """Experiment: which 4-bit format (Int4, FP4, NF4; block-wise absmax) reconstructs `matrix` best?

    `observed` is a dict format -> relative error ||W_hat - W|| / ||W||, recomputed here.
    """
    from ..quant import blockwise_absmax_dequantize, blockwise_absmax_quantize, dequantize_4bit, quantize_4bit
    from .lesson_01 import _choice, _predict_observe

    w = _torch.as_tensor(matrix).detach().float().cpu()
    roundtrips = {"Int4": lambda: blockwise_absmax_dequantize(*blockwise_absmax_quantize(w, block_size, bits=4)),
                  "FP4": lambda: dequantize_4bit(*quantize_4bit(w, block_size, "fp4"), "fp4"),
                  "NF4": lambda: dequantize_4bit(*quantize_4bit(w, block_size, "nf4"), "nf4")}
    expected = {label: ((make() - w).norm() / w.norm()).item() for label, make in roundtrips.items()}
    best = min(expected, key=expected.get)
    z = (w - w.mean()) / w.std()
    kurtosis = z.pow(4).mean().item()
    shape = ("flatter than a normal (kurtosis {k:.1f} < 3): values spread evenly up to the block's absmax, where "
             "evenly spaced levels serve them best" if kurtosis < 2.5 else
             "heavier-tailed than a normal (kurtosis {k:.1f} > 3): divided by the block's absmax, most values crowd "
             "near 0, where NF4 has more useful levels than Int4 and FP4 wastes codes on a level next to 0"
             if kurtosis > 3.5 else "close to a normal (kurtosis {k:.1f}), which is what NF4's quantiles are built for"
             ).format(k=kurtosis)

    def judge(prediction, observed):
        said = _choice(prediction, _FORMATS)
        if not isinstance(observed, dict):
            return 'the observation is a dict {"Int4": error, "FP4": error, "NF4": error}: measure all three formats.'
        values = {_choice(label, _FORMATS): float(_q_number(v)) for label, v in observed.items()}
        missing = [label for label in expected if label not in values]
        if missing:
            return f"measure every format: {', '.join(missing)} is missing from the dict."
        for label, value in values.items():
            if not _math.isclose(value, expected[label], rel_tol=1e-3):
                swapped = [other for other in expected if _math.isclose(value, expected[other], rel_tol=1e-3)]
                if swapped:
                    return f"the value under {label!r} is {swapped[0]}'s error: check which round trip you ran."
                return (f"{label}: {value:.4g} is not the relative error ||W_hat - W|| / ||W|| of a block-wise "
                        f"round trip with block size {block_size} (expected about {expected[label]:.4f}).")
        if said != best:
            ranked = " < ".join(f"{label} {expected[label]:.4f}" for label in sorted(expected, key=expected.get))
            return (f"you measured it yourself: {ranked}, so {best} wins, not {said}. Why: the best levels follow "
                    f"the distribution of the values, and this matrix is {shape}.")
        return None

    return _predict_observe(
        "format experiment", prediction, observed, judge,
        success=f"correct: {best} has the smallest error ({expected[best]:.4f}). No 4-bit format is best for "
                "every matrix: NF4 wins on bell-shaped weights because its levels are normal quantiles.")
