"""Constants of the 4-bit formats, and the input checks every function here shares (messages that name the fix)."""

from __future__ import annotations

import torch


QUANT_TYPES_4BIT = ("nf4", "fp4")
"""The 4-bit formats of `quantize_4bit` (bitsandbytes' two). Uniform Int4 is
`blockwise_absmax_quantize(x, block_size, bits=4)`."""

BNB_4BIT_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Block sizes bitsandbytes 0.50 accepts in `quantize_4bit` (it raises on any other)."""

NF4_OFFSET = 1 - 0.5 * (1 / 32 + 1 / 30)
"""The outermost quantile of NF4 (QLoRA paper): 0.96770833..."""

BNB_NF4_OFFSET = 0.9677083
"""The same offset as bitsandbytes writes it, rounded to 7 digits."""

DOUBLE_QUANT_ROUNDINGS = ("bitsandbytes_cpu", "nearest")

_LUT_SIZE = 65536  # bins of bitsandbytes' CPU 8-bit lookup table


# --------------------------------------------------------------------------
# Checks shared by the functions below: bad input gets a message naming the fix.
# --------------------------------------------------------------------------

def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8 (8 for int8, 4 for int4), got {bits!r}.")


def _check_float(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor (fp32, fp16 or bf16), got {got}.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: there is nothing to quantize.")


def _check_blocks(numel: int, block_size: int) -> None:
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    if numel % block_size:
        raise ValueError(
            f"The tensor has {numel} values, which is not a multiple of block_size={block_size} "
            f"({numel % block_size} values would be left over). Nothing is padded silently: choose a "
            "block size that divides the number of values, or pad the tensor yourself. (bitsandbytes "
            "would quantize the leftover values as one shorter last block.)"
        )


def _check_quant_type(quant_type: str) -> None:
    if quant_type not in QUANT_TYPES_4BIT:
        raise ValueError(
            f"Unknown 4-bit quantization type {quant_type!r}: choose one of {QUANT_TYPES_4BIT}. "
            "For uniform Int4 use blockwise_absmax_quantize(x, block_size, bits=4)."
        )


def _check_4bit_block_size(block_size: int) -> None:
    if block_size not in BNB_4BIT_BLOCK_SIZES:
        raise ValueError(
            f"block_size={block_size!r} is not supported: bitsandbytes' 4-bit quantization accepts "
            f"{BNB_4BIT_BLOCK_SIZES} (QLoRA uses 64)."
        )
