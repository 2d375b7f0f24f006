"""Singular values, energy and low-rank approximation: the linear algebra behind LoRA.

Lesson 01 builds these ideas inline and then imports them from here; lessons 02
and 05 reuse them on real weight updates. Everything works on torch tensors and
is computed in float64 where precision matters, so a tolerance in a lesson's
`assert` is about the maths, not about float32 rounding.

- `energy_fraction(s)`: the share of ||M||_F^2 held by the top-k singular values,
  for every k (||M||_F^2 is the sum of the squared singular values).
- `directions_for_energy(s, fraction)`: the smallest k whose top-k directions
  hold at least `fraction` of the energy.
- `rank_k_approximation(M, k)`: the best rank-k approximation (truncated SVD,
  Eckart-Young).
- `random_like(M)`: a Gaussian matrix of the same shape and Frobenius norm, the
  "no structure" baseline to compare a spectrum with.
- `subspace_similarity(U1, U2, i, j)`: how much the top-i directions of one
  basis overlap the top-j of another (LoRA paper, section 7).
"""

from __future__ import annotations

import torch


def _check_singular_values(singular_values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(singular_values).detach().to(torch.float64).cpu()
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"Expected a non-empty 1-D tensor of singular values, got shape {tuple(values.shape)}. "
                         "Pass torch.linalg.svdvals(matrix).")
    if (values < 0).any():
        raise ValueError("Singular values are never negative; pass torch.linalg.svdvals(matrix), not eigenvalues.")
    if (values[1:] > values[:-1]).any():
        raise ValueError("Singular values must be sorted largest first, as torch.linalg.svdvals returns them.")
    if values[0] == 0:
        raise ValueError("All singular values are zero: a zero matrix has no energy to share out.")
    return values


def energy_fraction(singular_values: torch.Tensor) -> torch.Tensor:
    """Cumulative energy: entry k-1 is the share of ||M||_F^2 held by the top k directions.

    Energy is the squared singular value, because ||M||_F^2 = sum_i s_i^2.
    The last entry is 1. Returned in float64.
    """
    values = _check_singular_values(singular_values)
    energy = values.square().cumsum(0)
    return energy / energy[-1]


def directions_for_energy(singular_values: torch.Tensor, fraction: float) -> int:
    """The smallest k such that the top-k singular directions hold >= `fraction` of the energy."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}; write 90% as 0.9.")
    values = _check_singular_values(singular_values)
    energy = values.square().cumsum(0)
    # Compare energies rather than ratios, so fraction=1.0 is exact (no rounding of x/x).
    return int((energy < fraction * energy[-1]).sum().item()) + 1


def rank_k_approximation(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The best rank-k approximation of `matrix` in Frobenius (and spectral) norm.

    Keep the top k singular triplets: U_k diag(s_k) V_k^T. Eckart-Young says no
    rank-k matrix is closer, and that the error is sqrt(sum of the discarded s_i^2).
    Returned in the matrix's dtype.
    """
    if matrix.ndim != 2:
        raise ValueError(f"Expected a 2-D matrix, got shape {tuple(matrix.shape)}.")
    full_rank = min(matrix.shape)
    if not 0 <= k <= full_rank:
        raise ValueError(f"k must be between 0 and min{tuple(matrix.shape)} = {full_rank}, got {k}.")
    U, S, Vh = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    return ((U[:, :k] * S[:k]) @ Vh[:k]).to(matrix.dtype)


def random_like(matrix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gaussian matrix with the same shape, dtype and Frobenius norm as `matrix`.

    Its singular values spread out (Marchenko-Pastur) instead of concentrating
    in a few directions: the baseline that shows whether a matrix has low-rank
    structure. Pass a seeded `generator` for reproducible draws.
    """
    noise = torch.randn(matrix.shape, generator=generator, dtype=torch.float64)
    target = torch.linalg.matrix_norm(matrix.detach().to(torch.float64).cpu())
    return (noise * (target / torch.linalg.matrix_norm(noise))).to(dtype=matrix.dtype, device=matrix.device)


def subspace_similarity(U1: torch.Tensor, U2: torch.Tensor, i: int, j: int) -> float:
    """phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j), in [0, 1] (LoRA paper section 7).

    The columns of U1 and U2 must be orthonormal (singular vectors, largest
    first). phi is 1 when the smaller subspace lies inside the larger one and
    about max(i, j) / n for unrelated random subspaces of R^n.
    """
    if U1.ndim != 2 or U2.ndim != 2 or U1.shape[0] != U2.shape[0]:
        raise ValueError(f"U1 and U2 must be 2-D with the same number of rows (vectors of the same space), "
                         f"got {tuple(U1.shape)} and {tuple(U2.shape)}. For right singular vectors pass Vh.T.")
    if not 1 <= i <= U1.shape[1] or not 1 <= j <= U2.shape[1]:
        raise ValueError(f"Need 1 <= i <= {U1.shape[1]} and 1 <= j <= {U2.shape[1]}, got i={i}, j={j}.")
    overlap = U1[:, :i].to(torch.float64).T @ U2[:, :j].to(torch.float64)
    return float(overlap.square().sum() / min(i, j))
