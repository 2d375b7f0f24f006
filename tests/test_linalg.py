"""course_utils.linalg: energy, rank-k approximation, random baselines, subspace similarity."""

import math

import pytest
import torch

from course_utils.linalg import (
    directions_for_energy,
    energy_fraction,
    random_like,
    rank_k_approximation,
    subspace_similarity,
)


def test_energy_fraction_is_the_cumulative_share_of_squared_values():
    fractions = energy_fraction(torch.tensor([3.0, 2.0, 1.0]))
    total = 9 + 4 + 1
    assert torch.allclose(fractions, torch.tensor([9 / total, 13 / total, 1.0], dtype=torch.float64))


def test_energy_of_a_matrix_equals_its_squared_frobenius_norm_share():
    matrix = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.linalg.svdvals(matrix)
    k = 5
    approx = rank_k_approximation(matrix, k)
    assert energy_fraction(s)[k - 1].item() == pytest.approx(
        (torch.linalg.matrix_norm(approx) ** 2 / torch.linalg.matrix_norm(matrix) ** 2).item(), rel=1e-10)


def test_directions_for_energy_counts_the_smallest_k():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert directions_for_energy(s, 9 / 14) == 1
    assert directions_for_energy(s, 0.65) == 2
    assert directions_for_energy(s, 13 / 14) == 2
    assert directions_for_energy(s, 0.95) == 3
    assert directions_for_energy(s, 1.0) == 3
    assert directions_for_energy(torch.tensor([1.0, 0.0, 0.0]), 1.0) == 1  # zeros hold no energy


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 2.0]), torch.tensor([1.0, -0.5]), torch.zeros(3),
                                 torch.ones(2, 2), torch.tensor([])])
def test_singular_value_functions_reject_what_svdvals_never_returns(bad):
    with pytest.raises(ValueError):
        energy_fraction(bad)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, 90])
def test_directions_for_energy_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="0.9"):
        directions_for_energy(torch.tensor([2.0, 1.0]), fraction)


def test_rank_k_approximation_has_rank_k_and_the_eckart_young_error():
    matrix = torch.randn(40, 25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = torch.linalg.svdvals(matrix)
    for k in (0, 1, 7, 25):
        approx = rank_k_approximation(matrix, k)
        assert torch.linalg.matrix_rank(approx).item() == k
        error = torch.linalg.matrix_norm(matrix - approx).item()
        assert error == pytest.approx(math.sqrt(s[k:].square().sum().item()), abs=1e-10)


def test_rank_k_approximation_beats_a_random_rank_k_matrix():
    g = torch.Generator().manual_seed(2)
    matrix = torch.randn(20, 20, generator=g, dtype=torch.float64)
    best = torch.linalg.matrix_norm(matrix - rank_k_approximation(matrix, 3))
    other = torch.randn(20, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 20, generator=g, dtype=torch.float64)
    assert best < torch.linalg.matrix_norm(matrix - other)


def test_rank_k_approximation_keeps_the_dtype_and_rejects_bad_k():
    matrix = torch.randn(6, 4)
    assert rank_k_approximation(matrix, 2).dtype == torch.float32
    for k in (-1, 5):
        with pytest.raises(ValueError, match="between 0 and"):
            rank_k_approximation(matrix, k)
    with pytest.raises(ValueError, match="2-D"):
        rank_k_approximation(torch.randn(3), 1)


def test_random_like_matches_shape_norm_and_is_reproducible():
    matrix = torch.randn(50, 30) * 7
    a = random_like(matrix, torch.Generator().manual_seed(3))
    b = random_like(matrix, torch.Generator().manual_seed(3))
    assert a.shape == matrix.shape and a.dtype == matrix.dtype
    assert torch.equal(a, b)
    assert torch.linalg.matrix_norm(a).item() == pytest.approx(torch.linalg.matrix_norm(matrix).item(), rel=1e-5)
    assert not torch.allclose(a, matrix)


def test_random_like_spreads_energy_unlike_a_low_rank_matrix():
    g = torch.Generator().manual_seed(4)
    low_rank = torch.randn(100, 2, generator=g) @ torch.randn(2, 100, generator=g)
    assert directions_for_energy(torch.linalg.svdvals(low_rank), 0.9) <= 2
    assert directions_for_energy(torch.linalg.svdvals(random_like(low_rank, g)), 0.9) > 40


def _orthonormal(n, k, seed):
    return torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_subspace_similarity_is_one_for_nested_subspaces_and_zero_for_orthogonal_ones():
    basis = _orthonormal(10, 10, 5)
    assert subspace_similarity(basis[:, :6], basis[:, :3], 6, 3) == pytest.approx(1.0)
    assert subspace_similarity(basis[:, :3], basis[:, 3:], 3, 4) == pytest.approx(0.0, abs=1e-12)
    # half of a 2-D subspace shared: ||U1^T U2||_F^2 = 1, divided by min(2, 2)
    assert subspace_similarity(basis[:, [0, 1]], basis[:, [0, 2]], 2, 2) == pytest.approx(0.5)


def test_subspace_similarity_of_random_subspaces_is_about_j_over_n():
    n, i, j = 400, 4, 40
    values = [subspace_similarity(_orthonormal(n, i, s), _orthonormal(n, j, 100 + s), i, j) for s in range(20)]
    assert sum(values) / len(values) == pytest.approx(j / n, rel=0.3)


def test_subspace_similarity_rejects_mismatched_shapes_and_indices():
    with pytest.raises(ValueError, match="same number of rows"):
        subspace_similarity(torch.eye(4), torch.eye(5), 1, 1)
    with pytest.raises(ValueError, match="1 <= i"):
        subspace_similarity(torch.eye(4), torch.eye(4), 0, 1)
    with pytest.raises(ValueError, match="1 <= i"):
        subspace_similarity(torch.eye(4)[:, :2], torch.eye(4), 3, 1)
