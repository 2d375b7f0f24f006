"""Counting distinct values per block tells weights that went through GGUF Q4_1 from unquantized ones."""

import pytest
import torch

from course_utils import quant


def q4_1_like(rows: int = 16, cols: int = 64, seed: int = 0) -> torch.Tensor:
    """Weights as GGUF Q4_1 stores them: per block of 32, m + d q with q in 0..15."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randn(rows * cols // 32, 32, generator=g)
    low, high = blocks.amin(dim=1, keepdim=True), blocks.amax(dim=1, keepdim=True)
    step = (high - low) / 15
    return (low + step * ((blocks - low) / step).round()).reshape(rows, cols)


def test_distinct_per_block_counts_values():
    w = torch.tensor([[1.0, 1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5]])
    assert quant.distinct_per_block(w, block_size=4).tolist() == [3, 1]
    assert quant.distinct_per_block(w, block_size=2).tolist() == [1, 2, 1, 1]


def test_q4_1_weights_hold_at_most_16_values_per_block_and_gaussian_ones_32():
    history = q4_1_like()
    assert int(quant.distinct_per_block(history).max()) <= 16
    assert quant.has_q4_1_history([history])
    gaussian = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    assert quant.distinct_per_block(gaussian).min() == 32
    assert not quant.has_q4_1_history([gaussian])
    assert not quant.has_q4_1_history([history, gaussian])  # every matrix must show it
    assert not quant.has_q4_1_history([gaussian.bfloat16()])  # bf16 weights (the hub's) are not 4-bit


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="multiple of block_size"):
        quant.distinct_per_block(torch.randn(5, 7))
    with pytest.raises(ValueError, match="floating-point"):
        quant.distinct_per_block(torch.arange(64))
    with pytest.raises(ValueError, match="at least one"):
        quant.has_q4_1_history([])
