"""Lessons 06-08: were these weights 4-bit once already? (GGUF Q4_1 leaves at most 16 values per 32-weight
block.)"""

from __future__ import annotations

import torch

from .validate import _check_blocks, _check_float


Q4_1_BLOCK = 32
"""GGUF Q4_1 stores 32 consecutive weights per block, each as m + d q: a per-block
minimum m and step d, and a 4-bit code q in 0..15 (so at most 16 distinct values)."""

Q4_1_LEVELS = 16


def distinct_per_block(w: torch.Tensor, block_size: int = Q4_1_BLOCK) -> torch.Tensor:
    """How many distinct values each block of `block_size` consecutive values of `w` holds.

    Unquantized weights (fp32, bf16) hold about `block_size`; weights that went
    through a 4-bit format hold at most 16 per block of that format. The count
    is what tells the two apart, whatever the file they were read from says.
    """
    _check_float(w, "w")
    _check_blocks(w.numel(), block_size)
    ordered = w.detach().reshape(-1, block_size).sort(dim=1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)


def has_q4_1_history(weights) -> bool:
    """True when every 32-value block of every matrix in `weights` holds at most 16 distinct values.

    That is the footprint of GGUF Q4_1 (the course's offline copy of SmolLM2);
    the hub's bf16 weights hold about 31 distinct values per block and give False.
    Pass the matrices themselves (a dict's `.values()`, or a list).
    """
    matrices = list(weights)
    if not matrices:
        raise ValueError("pass at least one weight matrix.")
    return all(int(distinct_per_block(w).max()) <= Q4_1_LEVELS for w in matrices)
