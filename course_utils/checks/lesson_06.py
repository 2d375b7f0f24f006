"""Self-checks of Lesson 06: NF4 from scratch (codes by hand, double-quantization bits, dequantizing)."""

from __future__ import annotations

import math as _math
from typing import Any

import torch as _torch

from .core import Feedback, _q_number, _q_tensor, run_check


def check_nf4_codes(answer: Any, block: Any) -> Feedback:
    """Lesson 06: the NF4 codes (0..15) bitsandbytes gives the values of one block."""
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
    """Lesson 06: bits per parameter of NF4 with double quantization for a large matrix."""
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
    """Lesson 06: the values that NF4 codes of one block stand for."""
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
