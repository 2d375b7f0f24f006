"""Self-checks of lesson 09 (QLoRA training): placeholder, typical wrong answers, right answer.

Expected values are computed here by hand from shapes and constructed matrices, not copied from a run.
"""

import pytest
import torch

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG
from course_utils.compare import ExampleLosses

CONFIG = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
          "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
          "max_position_embeddings": 256}


def test_paged_full_finetune_bytes():
    from course_utils.memory import load_config

    config = load_config(CONFIG)
    big = [512 * 512, 512 * 512, 512 * 1024, 512 * 1024, 1024 * 512]  # q, o, gate, up, down: >= 100,000 elements
    small = [512 * 128, 512 * 128, 512, 512]  # k, v (2 kv heads of 64) and the two norms: not paged
    paged = 2 * sum(big) + 2 * 1000 * 512  # two layers, plus the embeddings and the untied lm_head
    everything = paged + 2 * sum(small) + 512  # ... and the final norm
    check = checks.check_paged_full_finetune_bytes
    assert check(..., config).status == NOT_ATTEMPTED
    assert check(2 * paged, config).correct  # two 8-bit moments per element
    assert "GiB" in check(2 * paged / 2**30, config).message
    assert "pages every tensor" in check(2 * everything, config).message
    assert "32bit" in check(8 * paged, config).message
    assert "two moments" in check(paged, config).message
    assert check(-1, config).status == WRONG
    assert check(3 * paged, config).status == WRONG


def constructed_error(values=(4.0, 3.0, 2.0, 1.0)):
    """A 6 x 5 matrix with the given singular values."""
    generator = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))
    S = torch.zeros(6, 5, dtype=torch.float64)
    for i, s in enumerate(values):
        S[i, i] = s
    return (U @ S @ V.T).float()


def test_loftq_share():
    error = constructed_error()
    right = (16 + 9) / (16 + 9 + 4 + 1)
    check = checks.check_loftq_share
    assert check(..., error, 2).status == NOT_ATTEMPTED
    assert check(right, error, 2).correct
    assert check(torch.tensor(right), error, 2).correct
    assert "percentage" in check(100 * right, error, 2).message
    assert "remains" in check(1 - right, error, 2).message
    assert "squares" in check((4 + 3) / 10, error, 2).message
    assert "drop of the norm" in check(1 - (5 / 30) ** 0.5, error, 2).message
    assert check(0.5, error, 2).status == WRONG


def losses(means, counts=(10, 20, 30, 40)):
    return ExampleLosses.of([m * c for m, c in zip(means, counts)], counts)


def test_base_format_experiment():
    nf4 = losses([1.0, 1.2, 0.9, 1.1])
    much_higher = losses([1.2, 1.4, 1.1, 1.3])  # every question 0.2 higher: far beyond the noise
    much_lower = losses([0.8, 1.0, 0.7, 0.9])
    mixed = losses([1.05, 1.15, 0.95, 1.05])  # some up, some down: no difference detected
    check = checks.check_base_format_experiment
    assert check(..., ..., nf4).status == NOT_ATTEMPTED
    assert check("higher", ..., nf4).status == NOT_ATTEMPTED
    assert check("higher", much_higher, nf4).correct
    assert check("higher", (list(much_higher.sums), list(much_higher.counts)), nf4).correct  # (sums, counts) works
    wrong = check("about the same", much_higher, nf4)
    assert wrong.status == WRONG and "observation is right" in wrong.message and "higher" in wrong.message
    assert "normally distributed" in wrong.message
    assert "Q4_1" in check("higher", much_lower, nf4).message
    assert check("lower", much_lower, nf4).correct
    for word in ("about the same", "lower", "higher"):  # not detected: inconclusive, no prediction refuted
        said = check(word, mixed, nf4)
        assert said.status != WRONG and said.message.startswith("inconclusive: no difference detected")
    assert "correct: FP4's base loss is higher" in check("higher", much_higher, nf4).message
    assert "same yardstick questions" in check("higher", losses([1.0, 1.0, 1.0], (10, 20, 30)), nf4).message
    assert "NF4 losses again" in check("higher", nf4, nf4).message
    assert "ExampleLosses" in check("higher", "0.9", nf4).message
    assert check("maybe", much_higher, nf4).status == WRONG


@pytest.mark.parametrize("word", ["Higher", " higher ", "larger"])
def test_prediction_words(word):
    nf4 = losses([1.0, 1.2, 0.9, 1.1])
    assert checks.check_base_format_experiment(word, losses([1.2, 1.4, 1.1, 1.3]), nf4).correct
