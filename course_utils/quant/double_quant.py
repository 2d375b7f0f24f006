"""Lesson 07: double quantization of the block scales (8-bit codes of the absmax values), as bitsandbytes' CPU
kernel rounds them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import _check_float, DOUBLE_QUANT_ROUNDINGS, _LUT_SIZE


def dynamic_map_8bit() -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic" code (`create_dynamic_map(signed=True)`), 256 sorted values.

    A dynamic-tree float: for exponent i = 0..6 the magnitudes 10^(i-6) * m,
    with m the 2^i midpoints of an even grid on [0.1, 1]; each with both
    signs, plus 0 and 1. Fine steps near 0, coarse ones near +-1.
    """
    values = [torch.zeros(1), torch.ones(1)]
    for i in range(7):  # 7 exponents, not a loop over data
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        values += [(10 ** (i - 6)) * means, -(10 ** (i - 6)) * means]
    return torch.cat(values).float().sort().values


@dataclass(frozen=True)
class DoubleQuantizedAbsmax:
    """The first-level scales stored in 8 bits: what bitsandbytes keeps with compress_statistics=True.

    absmax ~= dynamic_map_8bit()[codes] * nested_absmax[block] + offset.
    """

    codes: torch.Tensor  # uint8, one per first-level block (bnb: quant_state.absmax)
    nested_absmax: torch.Tensor  # float32, one per block of `block_size` scales (bnb: quant_state.state2.absmax)
    offset: torch.Tensor  # float32 scalar, the mean of the scales (bnb: quant_state.offset)
    block_size: int = 256


def _bnb_cpu_lookup_codes(scaled: torch.Tensor, midpoints: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' CPU 8-bit rounding: each value goes to the closest of 65,536 even points on [-1, 1], whose codes are precomputed."""
    grid = -1.0 + (2.0 * torch.arange(_LUT_SIZE, dtype=torch.float32, device=scaled.device)) / (_LUT_SIZE - 1)
    table = torch.searchsorted(midpoints, grid, side="left")
    bins = ((scaled.clamp(-1, 1) + 1.0) * 0.5 * (_LUT_SIZE - 1) + 0.5).to(torch.int64)  # truncation, as C does
    return table[bins]


def double_quantize_absmax(absmax: torch.Tensor, block_size: int = 256,
                           rounding: str = "bitsandbytes_cpu") -> DoubleQuantizedAbsmax:
    """Quantize the fp32 block scales to 8 bits: subtract their mean, then block-wise absmax with the dynamic map.

    The number of scales is rarely a multiple of 256, so the last block may be
    shorter (as in bitsandbytes): it gets its own absmax over the scales it
    holds. rounding="bitsandbytes_cpu" reproduces bitsandbytes' CPU kernel
    (a 65,536-bin lookup table); rounding="nearest" takes the exactly nearest
    code, which differs on about 0.1% of the scales.
    """
    if rounding not in DOUBLE_QUANT_ROUNDINGS:
        raise ValueError(f"Unknown rounding {rounding!r}: choose one of {DOUBLE_QUANT_ROUNDINGS}.")
    _check_float(absmax, "absmax")
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    flat = absmax.detach().float().reshape(-1)
    offset = flat.mean()
    centred = flat - offset
    padded = torch.nn.functional.pad(centred, (0, -centred.numel() % block_size))  # zeros: no effect on a max
    blocks = padded.reshape(-1, block_size)
    nested_absmax = blocks.abs().amax(dim=1)
    inverse = torch.where(nested_absmax > 0, 1.0 / nested_absmax, torch.zeros_like(nested_absmax))
    scaled = (blocks * inverse[:, None]).reshape(-1)[: flat.numel()]
    code = dynamic_map_8bit().to(flat.device)
    midpoints = (code[:-1] + code[1:]) / 2
    if rounding == "nearest":
        codes = torch.searchsorted(midpoints, scaled, side="left")
    else:
        codes = _bnb_cpu_lookup_codes(scaled, midpoints)
        zero_block = (nested_absmax == 0).repeat_interleave(block_size)[: flat.numel()]
        codes = torch.where(zero_block, torch.zeros_like(codes), codes)  # bnb's CPU kernel writes code 0 there
    return DoubleQuantizedAbsmax(codes.to(torch.uint8), nested_absmax, offset, block_size)


def dequantize_absmax(state: DoubleQuantizedAbsmax) -> torch.Tensor:
    """The first-level scales back in float32, as bitsandbytes recovers them before dequantizing weights."""
    n = state.codes.numel()
    values = dynamic_map_8bit().to(state.codes.device)[state.codes.long()]
    scales = state.nested_absmax.repeat_interleave(state.block_size)[:n]
    return values * scales + state.offset
