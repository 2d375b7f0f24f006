"""Self-checks of lesson 02: placeholder, typical wrong answers, right answer."""

import math

import torch

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG


def structured_matrix() -> torch.Tensor:
    """A 20 x 30 matrix that is nearly rank 2, with Frobenius norm far from sqrt(600)."""
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(20, 2, generator=g, dtype=torch.float64), torch.randn(2, 30, generator=g, dtype=torch.float64)
    m = u @ v + 0.01 * torch.randn(20, 30, generator=g, dtype=torch.float64)
    return m * (3.0 / torch.linalg.matrix_norm(m))


def test_random_baseline():
    m = structured_matrix()
    noise = torch.randn(m.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    right = noise * (torch.linalg.matrix_norm(m) / torch.linalg.matrix_norm(noise))
    assert checks.check_random_baseline(..., m).status == NOT_ATTEMPTED
    assert checks.check_random_baseline(right, m).correct
    assert checks.check_random_baseline(right.float(), m).correct
    rank_one = torch.outer(noise[:, 0], noise[0])
    rank_one = rank_one * (3.0 / torch.linalg.matrix_norm(rank_one))
    spectral = noise * (torch.linalg.matrix_norm(m, ord=2) / torch.linalg.matrix_norm(noise, ord=2))
    for wrong, hint in [(noise, "plain randn"), (right.T, "transposed"), (m.clone(), "itself"),
                        (2 * m, "scaled copy"), (spectral, "spectral"), (0.5 * right, "Frobenius norm"),
                        (rank_one, "not unstructured"), (torch.randn(5, 5), "expected (20, 30)"),
                        ([[1.0]], "torch tensor")]:
        feedback = checks.check_random_baseline(wrong, m)
        assert feedback.status == WRONG and hint in feedback.message, (hint, feedback.message)


def test_shared_rank_needs_the_worst_matrix():
    # needs at 80%: [4,1,1,1,1] -> 1 (16 of 20), [2,2,1,1,1] -> 3 (9 of 11), [1]*5 -> 4 (4 of 5)
    spectra = {"a": torch.tensor([4.0, 1, 1, 1, 1]), "b": torch.tensor([2.0, 2, 1, 1, 1]), "c": torch.ones(5)}
    assert checks.check_shared_rank(..., spectra).status == NOT_ATTEMPTED
    assert checks.check_shared_rank(4, spectra).correct
    assert checks.check_shared_rank(torch.tensor(4), list(spectra.values())).correct
    assert "median" in checks.check_shared_rank(3, spectra).message
    assert "least" in checks.check_shared_rank(1, spectra).message
    assert "90%" in checks.check_shared_rank(5, spectra).message  # c needs all 5 directions for 90%
    assert checks.check_shared_rank(2.5, spectra).status == WRONG


def test_shared_rank_typical_slips():
    # one matrix, s = [3, 1 x 9]: energy 18; 80% (14.4) needs 7 directions, 90% (16.2) needs 9;
    # summing s instead (12, 80% = 9.6) would give 8.
    s = torch.tensor([3.0] + [1.0] * 9)
    energy = s.square().cumsum(0)
    assert int((energy < 0.8 * energy[-1]).sum()) + 1 == 7
    assert checks.check_shared_rank(7, [s]).correct
    assert "squared" in checks.check_shared_rank(8, [s]).message
    assert "90%" in checks.check_shared_rank(9, [s]).message
    assert "one short" in checks.check_shared_rank(6, [s]).message
    assert "not the smallest" in checks.check_shared_rank(10, [s]).message


def test_adapter_params():
    shapes = [(576, 576), (192, 576)] * 2
    r = 16
    right = 2 * r * (576 + 576) + 2 * r * (192 + 576)
    assert checks.check_adapter_params(..., shapes, r).status == NOT_ATTEMPTED
    assert checks.check_adapter_params(right, shapes, r).correct
    assert checks.check_adapter_params(torch.tensor(right), shapes, r).correct
    for wrong, hint in [(2 * 576 * 576 + 2 * 192 * 576, "full matrices"), (4 * r * 1152, "narrower"),
                        (r * 1152, "one matrix"), (right // 2, "one of the two factors"), (right + 1, "not sum")]:
        feedback = checks.check_adapter_params(wrong, shapes, r)
        assert feedback.status == WRONG and hint in feedback.message, (hint, feedback.message)
    assert math.isclose(right / (2 * 576 * 576 + 2 * 192 * 576), 61440 / 884736)


def fake_truncations(monkeypatch, rank1_level: float) -> dict:
    """Stand-ins for two seeds of the cached full fine-tune: per-question losses by rank, and a ΔW for spectra."""
    from course_utils import full_finetune
    from course_utils.compare import ExampleLosses

    counts = [10 + i % 7 for i in range(40)]
    wiggle = [0.05 * ((i * 37) % 11 - 5) for i in range(40)]  # per-question spread, the same for every rank

    def losses(level, seed, jitter=0.0):  # jitter: a per-question difference of mean zero
        return ExampleLosses.of([(level + 0.1 * seed + w + jitter * (-1) ** i) * c
                                 for i, (w, c) in enumerate(zip(wiggle, counts))], counts)

    levels = {0: 2.0, None: 0.9, 8: 1.0, 1: rank1_level}
    g = torch.Generator().manual_seed(0)
    delta = {"m": torch.randn(12, 2, generator=g) @ torch.randn(2, 16, generator=g)}
    monkeypatch.setattr(full_finetune, "full_finetune_example_losses",
                        lambda settings, rank=None, **kw: losses(levels[rank], settings["seed"] if rank != 0 else 0,
                                                                             0.05 * (rank == 1)))
    monkeypatch.setattr(full_finetune, "full_finetune_dir", lambda settings: "folder")
    monkeypatch.setattr(full_finetune, "read_delta_w", lambda folder: delta)
    return {rank: [losses(level, seed if rank != 0 else 0, 0.05 * (rank == 1)).mean for seed in (0, 1)]
            for rank, level in levels.items()}  # the base model (rank 0) is the same for every seed


SEED_SETTINGS = [{"seed": 0}, {"seed": 1}]


def test_truncation_experiment(monkeypatch):
    by_rank = fake_truncations(monkeypatch, rank1_level=1.5)
    check = checks.check_truncation_experiment
    assert check(..., ..., SEED_SETTINGS).status == NOT_ATTEMPTED
    assert check("higher", ..., SEED_SETTINGS).status == NOT_ATTEMPTED  # predicted, not yet observed
    assert check("higher", by_rank[1], SEED_SETTINGS).correct
    assert check("worse", by_rank[1], SEED_SETTINGS).correct
    wrong = check("the same", by_rank[1], SEED_SETTINGS)
    assert wrong.status == WRONG and "energy" in wrong.message and "of the improvement" in wrong.message
    assert check("lower", by_rank[1], SEED_SETTINGS).status == WRONG
    for value, hint in [(by_rank[8], "rank 8's losses"), (by_rank[None], "full ΔW"), (by_rank[0], "base model"),
                        ([1.23, 1.3], "not the measured"), (by_rank[1][:1], "one answer loss per seed")]:
        feedback = check("higher", value, SEED_SETTINGS)
        assert feedback.status == WRONG and hint in feedback.message, (value, feedback.message)
    assert "not one of" in check("dunno", by_rank[1], SEED_SETTINGS).message


def test_truncation_experiment_within_the_noise(monkeypatch):
    by_rank = fake_truncations(monkeypatch, rank1_level=1.0001)
    assert checks.check_truncation_experiment("the same", by_rank[1], SEED_SETTINGS).correct
    wrong = checks.check_truncation_experiment("higher", by_rank[1], SEED_SETTINGS)
    assert wrong.status == WRONG and "no difference is detected" in wrong.message
