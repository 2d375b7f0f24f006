"""Lesson 07: block-wise 4-bit quantization (NF4, FP4), bit-exact with bitsandbytes on the CPU, and 4-bit
packing."""

from __future__ import annotations

import torch

from .tables import decision_midpoints, four_bit_table
from .validate import _check_4bit_block_size, _check_blocks, _check_float, _check_quant_type


def quantize_4bit(w: torch.Tensor, block_size: int = 64, quant_type: str = "nf4") -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise 4-bit quantization. Returns (codes, absmax).

    codes: uint8 in 0..15, one per value, shaped like w (unpacked; `pack_4bit`
    stores two per byte as bitsandbytes does). absmax: float32, one per block of
    `block_size` consecutive values. Each value is multiplied by 1/absmax of
    its block and assigned the level whose decision interval holds it
    (midpoints, ties to the lower level): exactly bitsandbytes' rule.
    """
    _check_quant_type(quant_type)
    _check_4bit_block_size(block_size)
    _check_float(w, "w")
    _check_blocks(w.numel(), block_size)
    blocks = w.detach().float().reshape(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]  # all-zero block: scaled 0 -> level 0.0
    midpoints, order = decision_midpoints(four_bit_table(quant_type).to(w.device))
    index = torch.searchsorted(midpoints, scaled.reshape(-1), side="left")
    return order[index].to(torch.uint8).reshape(w.shape), absmax


def dequantize_4bit(codes: torch.Tensor, absmax: torch.Tensor, quant_type: str = "nf4") -> torch.Tensor:
    """w_hat = table[code] * absmax of the block (float32), shaped like codes."""
    _check_quant_type(quant_type)
    if codes.numel() % absmax.numel():
        raise ValueError(f"{codes.numel()} codes do not split into {absmax.numel()} equal blocks: "
                         "pass the absmax that quantize_4bit returned with these codes.")
    block_size = codes.numel() // absmax.numel()
    levels = four_bit_table(quant_type).to(codes.device)[codes.long()]
    return (levels.reshape(-1, block_size) * absmax.float()[:, None]).reshape(codes.shape)


def quantize_nf4(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 block-wise quantization: `quantize_4bit(w, block_size, "nf4")`."""
    return quantize_4bit(w, block_size, "nf4")


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """Undo `quantize_nf4`."""
    return dequantize_4bit(codes, absmax, "nf4")


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the first value in the high nibble (bitsandbytes' order).

    Returns shape (numel / 2, 1), the shape of bitsandbytes' packed weight.
    """
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        raise ValueError(f"Packing needs an even number of codes, got {flat.numel()}.")
    if flat.numel() and int(flat.max()) > 15:
        raise ValueError(f"4-bit codes must be 0..15, found {int(flat.max())}.")
    return ((flat[0::2] << 4) | flat[1::2]).unsqueeze(1)


def unpack_4bit(packed: torch.Tensor) -> torch.Tensor:
    """Undo `pack_4bit`: a flat uint8 tensor of codes, high nibble first."""
    flat = packed.reshape(-1).to(torch.uint8)
    return torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)
