"""Quantization from scratch: absmax, zero-point, block-wise, NF4, FP4, double quantization.

Lessons 06 and 07 build each function here in the open, then import it. The
4-bit and double-quantization code reproduces bitsandbytes 0.50.2 on the CPU
bit for bit (same codes, same scales, same dequantized values), which
tests/test_quant.py checks against the library itself. Two details matter for
that, and both are taught in lesson 07:

* 4-bit codes: bitsandbytes multiplies each block by the reciprocal of its
  absmax and compares with the midpoints between neighbouring levels. Dividing
  by absmax and taking the nearest level is mathematically the same, but in
  float32 it disagrees on a few values per 10 million that sit on a decision
  boundary.
* 8-bit codes of the block scales (double quantization): bitsandbytes' CPU
  kernel does not search the 256-entry code; it maps each normalised value to
  one of 65,536 evenly spaced bins and reads the code from a precomputed
  table. That is nearest rounding up to the bin width (about 3e-5), so it
  differs from exact nearest rounding on roughly 0.1% of the scales.
  `double_quantize_absmax(..., rounding="bitsandbytes_cpu")` reproduces it.

Everything is vectorised: no Python loop runs over blocks or values.

A caution found while testing: bitsandbytes 0.50.2's CPU `dequantize_4bit`
returns wrong values when a block straddles two rows (row length not a
multiple of the block size, e.g. 576 columns with block size 128); its own
pure-PyTorch path and this module agree there. Rows of the course's models
are multiples of 64, so QLoRA's setting is unaffected.

One module per concern: `integer` (lesson 06), `tables`, `four_bit` and
`double_quant` (lesson 07), `accounting` (bits per parameter), `history` (the
Q4_1 footprint of the offline weights), `histogram` (the plot both lessons
draw) and `validate` (the formats' constants, the shared input checks). Every
name is importable from `course_utils.quant`.
"""

from __future__ import annotations

from .validate import (
    BNB_4BIT_BLOCK_SIZES, BNB_NF4_OFFSET, DOUBLE_QUANT_ROUNDINGS, NF4_OFFSET, QUANT_TYPES_4BIT,
)
from .integer import (
    absmax_dequantize, absmax_quantize, blockwise_absmax_dequantize, blockwise_absmax_quantize,
    zeropoint_dequantize, zeropoint_quantize,
)
from .tables import decision_midpoints, four_bit_table, fp4_table, int4_levels, nf4_table
from .four_bit import dequantize_4bit, dequantize_nf4, pack_4bit, quantize_4bit, quantize_nf4, unpack_4bit
from .double_quant import DoubleQuantizedAbsmax, dequantize_absmax, double_quantize_absmax, dynamic_map_8bit
from .accounting import bits_per_parameter, stored_bits_per_parameter
from .histogram import plot_histogram_with_levels
from .history import Q4_1_BLOCK, Q4_1_LEVELS, distinct_per_block, has_q4_1_history

__all__ = [
    'BNB_4BIT_BLOCK_SIZES', 'BNB_NF4_OFFSET', 'DOUBLE_QUANT_ROUNDINGS', 'DoubleQuantizedAbsmax',
    'NF4_OFFSET', 'Q4_1_BLOCK', 'Q4_1_LEVELS', 'QUANT_TYPES_4BIT', 'absmax_dequantize',
    'absmax_quantize', 'bits_per_parameter', 'blockwise_absmax_dequantize', 'blockwise_absmax_quantize',
    'decision_midpoints', 'dequantize_4bit', 'dequantize_absmax', 'dequantize_nf4',
    'distinct_per_block', 'double_quantize_absmax', 'dynamic_map_8bit', 'four_bit_table', 'fp4_table',
    'has_q4_1_history', 'int4_levels', 'nf4_table', 'pack_4bit', 'plot_histogram_with_levels',
    'quantize_4bit', 'quantize_nf4', 'stored_bits_per_parameter', 'unpack_4bit', 'zeropoint_dequantize',
    'zeropoint_quantize',
]
