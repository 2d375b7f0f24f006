"""Lesson 07: the 16 levels of NF4, FP4 and Int4, and the midpoints a code is chosen by."""

from __future__ import annotations

import torch

from .validate import BNB_NF4_OFFSET, _check_quant_type


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
