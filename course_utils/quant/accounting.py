"""Bits per parameter: planned from the format, and counted from a layer's stored tensors."""

from __future__ import annotations

import math

import torch


def bits_per_parameter(numel: int, block_size: int = 64, double_quant: bool = False,
                       nested_block_size: int = 256, code_bits: int = 4) -> float:
    """Stored bits per weight of block-wise 4-bit quantization.

    Without DQ: the codes plus one fp32 absmax per block, 4 + 32/64 = 4.5.
    With DQ: the codes, one 8-bit code per block, one fp32 scale per
    `nested_block_size` blocks and one fp32 offset: 4 + 8/64 + 32/(64*256) + ...
    = 4.127 for a large matrix. The two fixed code tables (16 and 256 values)
    are format constants and not counted.
    """
    if numel <= 0 or numel % block_size:
        raise ValueError(f"numel={numel} must be a positive multiple of block_size={block_size}.")
    blocks = numel // block_size
    bits = numel * code_bits
    if double_quant:
        bits += blocks * 8 + math.ceil(blocks / nested_block_size) * 32 + 32
    else:
        bits += blocks * 32
    return bits / numel


def stored_bits_per_parameter(tensors: list[torch.Tensor], numel: int) -> float:
    """Bits per weight actually held by `tensors` (their bytes, times 8, over numel)."""
    return sum(t.numel() * t.element_size() for t in tensors) * 8 / numel
