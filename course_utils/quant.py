"""Quantization from scratch: absmax, zero-point, block-wise, NF4, FP4, double quantization.

Lessons 05 and 06 build each function here in the open, then import it. The
4-bit and double-quantization code reproduces bitsandbytes 0.50.2 on the CPU
bit for bit (same codes, same scales, same dequantized values), which
tests/test_quant.py checks against the library itself. Two details matter for
that, and both are taught in lesson 06:

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# --------------------------------------------------------------------------
# Lesson 05: absmax (symmetric) and zero-point (asymmetric) integer quantization
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Lesson 06: the 4-bit tables
# --------------------------------------------------------------------------

def nf4_table(offset: float = BNB_NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, sorted, in [-1, 1], from quantiles of the standard normal.

    8 positive levels: Phi^-1(linspace(offset, 0.5, 9)[:-1]); 7 negative ones:
    -Phi^-1(linspace(offset, 0.5, 8)[:-1]); plus an exact 0. One more positive
    than negative level is what makes 0 representable with 16 codes. All are
    divided by the largest so the table spans [-1, 1].

    The default follows bitsandbytes' own recipe (offset rounded to 0.9677083,
    the grid in float32, the quantiles in float64, the normalisation in
    float32) and so returns its table bit for bit. With offset=NF4_OFFSET the
    levels move by up to 3e-7 (a few float32 rounding steps).
    """
    grid_pos = torch.linspace(offset, 0.5, 9, dtype=torch.float32)[:-1].double()
    grid_neg = torch.linspace(offset, 0.5, 8, dtype=torch.float32)[:-1].double()
    positive = torch.special.ndtri(grid_pos)
    negative = -torch.special.ndtri(grid_neg)
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


def fp4_table() -> torch.Tensor:
    """bitsandbytes' FP4 values, indexed by the 4-bit code (not sorted).

    Bit layout s e e m: sign bit 3, a 2-bit exponent field e, 1 mantissa bit m.
    Magnitude (1 + m/2) * 2^(4 - e) for e = 1, 2, 3 (so 8, 12, 4, 6, 2, 3) and
    m * 0.0625 for e = 0 (0 and a tiny 0.0625); divided by the largest, 12.
    This is bitsandbytes' own exponent order, listed in its source as
    [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, ...] / 12.
    """
    code = torch.arange(16)
    sign = torch.where(code >= 8, -1.0, 1.0)
    exponent, mantissa = (code >> 1) & 3, (code & 1).float()
    normal = (1 + mantissa / 2) * 2.0 ** (4 - exponent).float()
    magnitude = torch.where(exponent == 0, mantissa * 0.0625, normal)
    return (sign * magnitude / 12.0).float()


def int4_levels() -> torch.Tensor:
    """The 15 levels of uniform symmetric Int4 (absmax, codes -7..7), in [-1, 1]."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def four_bit_table(quant_type: str) -> torch.Tensor:
    """The 16-entry table of "nf4" or "fp4", indexed by code."""
    _check_quant_type(quant_type)
    return nf4_table() if quant_type == "nf4" else fp4_table()


def decision_midpoints(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints between neighbouring levels of `table`, and the sort order of the table.

    A scaled value v gets level k of the sorted table when
    midpoint[k-1] < v <= midpoint[k]: a value exactly on a midpoint goes to
    the lower level, as in bitsandbytes (torch.bucketize / searchsorted "left").
    """
    order = torch.argsort(table)  # the same call bitsandbytes makes, so ties (+0 / -0 in FP4) order alike
    ordered = table[order]
    return (ordered[:-1] + ordered[1:]) / 2, order


# --------------------------------------------------------------------------
# Lesson 06: block-wise 4-bit quantization (NF4, FP4), bit-exact with bitsandbytes
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Lesson 06: double quantization of the block scales
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Bit accounting
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# A plot helper for both lessons
# --------------------------------------------------------------------------

def plot_histogram_with_levels(ax, values: torch.Tensor, levels: torch.Tensor | None = None,
                               bins: int = 200, title: str = "", normal_fit: bool = False,
                               xlabel: str = "value") -> None:
    """Histogram of `values` (density) with optional vertical lines at `levels` and a fitted normal curve."""
    data = values.detach().float().reshape(-1).cpu()  # matplotlib reads numpy arrays, which live on the CPU
    ax.hist(data.numpy(), bins=bins, density=True, color="tab:blue", alpha=0.6, label="values")
    if normal_fit:
        mean, std = data.mean().item(), data.std().item()
        grid = torch.linspace(data.min().item(), data.max().item(), 400)
        density = torch.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        ax.plot(grid.numpy(), density.numpy(), color="tab:red", label=f"normal fit (sd {std:.3g})")
    if levels is not None:
        for i, level in enumerate(torch.as_tensor(levels).reshape(-1).tolist()):
            ax.axvline(level, color="black", lw=0.8, alpha=0.7, label="levels" if i == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
