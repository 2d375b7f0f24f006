"""Lesson 06: absmax (symmetric) and zero-point (asymmetric) integer quantization, whole-tensor and block-wise."""

from __future__ import annotations

import torch

from .validate import _check_bits, _check_blocks, _check_float


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a whole tensor: codes = round(x / scale).

    scale = max|x| / (2^(bits-1) - 1), so the largest magnitude maps to +-127
    (int8) or +-7 (int4) and 0 stays exactly 0. Returns (int8 codes, scale).
    One scale for the whole tensor means one outlier stretches it for every value.
    """
    _check_bits(bits)
    _check_float(x)
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().float().abs().max() / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero tensor gets codes 0
    codes = torch.round(x.float() / safe).to(torch.int8)
    return codes, scale


def absmax_dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x_hat = codes * scale (float32)."""
    return codes.float() * scale


def zeropoint_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantization: codes = round(x / scale) + zero_point in [0, 2^bits - 1].

    The range [min x, max x] is mapped onto all 2^bits codes, so a lopsided
    tensor (say all positive) wastes no codes on values it never takes.
    Returns (uint8 codes, scale, zero_point). The final clamp only catches
    rounding at the two ends of the range; no value of x lies outside it.
    """
    _check_bits(bits)
    _check_float(x)
    qmax = 2**bits - 1
    x = x.detach().float()
    low, high = x.min().clamp(max=0), x.max().clamp(min=0)  # keep 0 inside the range: 0 is exact
    scale = (high - low) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.round(-low / safe)
    codes = torch.clamp(torch.round(x / safe) + zero_point, 0, qmax).to(torch.uint8)
    return codes, scale, zero_point


def zeropoint_dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """x_hat = (codes - zero_point) * scale (float32)."""
    return (codes.float() - zero_point) * scale


def blockwise_absmax_quantize(x: torch.Tensor, block_size: int, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantization with one scale per block of `block_size` consecutive values.

    The tensor is read in storage order (row after row) and cut into blocks;
    an outlier then only coarsens the grid of its own block. Returns (int8
    codes shaped like x, float32 scales, one per block). block_size = x.numel()
    is per-tensor quantization.
    """
    _check_bits(bits)
    _check_float(x)
    _check_blocks(x.numel(), block_size)
    qmax = 2 ** (bits - 1) - 1
    blocks = x.detach().float().reshape(-1, block_size)
    scales = blocks.abs().amax(dim=1) / qmax
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round(blocks / safe[:, None]).to(torch.int8)
    return codes.reshape(x.shape), scales


def blockwise_absmax_dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Undo `blockwise_absmax_quantize`: each block's codes times its scale."""
    block_size = codes.numel() // scales.numel()
    return (codes.float().reshape(-1, block_size) * scales[:, None]).reshape(codes.shape)
