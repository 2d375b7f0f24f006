"""The cached full fine-tune (lesson 02's ΔW, lesson 11's full-FT baseline): trained once, logged like the adapters.

Trains the two-layer mini model (tests/mini_model.py, through the course's loading path) once for 2 steps of
2 examples with a 2-question validation set, and loads it once: the assertions are about caching and ranks,
not about what the model knows.
"""

import copy

import pytest
import torch

from course_utils import full_finetune as full_finetune_module
from course_utils import adapters as adapters_module
from course_utils.adapters import read_train_log
from course_utils.answers import answer_token_losses
from course_utils.data import evenly_spaced, load_examples
from course_utils.full_finetune import (full_finetune_config, full_finetune_dir, full_finetune_example_losses,
                                        full_finetune_settings, load_full_finetune,
                                        mark_full_finetune_trainable, read_delta_w, train_full_finetune)
from course_utils.models import MODEL_DIR_ENV, load_tokenizer
from mini_model import SHAPE as MINI_SHAPE, load_mini_model, mini_model_dir


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        patch.setenv(MODEL_DIR_ENV, str(mini_model_dir()))  # the course's model id, the mini model's weights
        patch.setattr(full_finetune_module, "VALIDATION_EXAMPLES", 2)  # the curve's size is not under test here
        yield full_finetune_settings(steps=2, batch_size=2)


@pytest.fixture(scope="module")
def base():
    return load_mini_model(dtype=torch.float32, device="cpu")


def test_settings_are_lesson_02s_and_refuse_unknown_knobs():
    settings = full_finetune_settings()
    assert settings["targets"] == ["q_proj", "v_proj"] and settings["learning_rate"] == 1e-5
    assert settings["batch_size"] == 8 and settings["seed"] == 0
    assert full_finetune_settings(seed=1)["seed"] == 1
    with pytest.raises(ValueError, match="Unknown full fine-tune setting"):
        full_finetune_settings(rank=8)
    config = full_finetune_config(full_finetune_settings(steps=30))
    assert config.eval_every == 30 // adapters_module.VALIDATION_POINTS  # the adapters' validation points


def test_only_the_target_weights_train(base):
    model = copy.deepcopy(base)
    trainable = mark_full_finetune_trainable(model, ["q_proj", "v_proj"])
    assert len(trainable) == 2 * model.config.num_hidden_layers
    assert all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in trainable)
    assert sum(p.requires_grad for p in model.parameters()) == len(trainable)
    with pytest.raises(ValueError, match="No weight of the model ends in"):
        mark_full_finetune_trainable(model, ["query"])


def test_yardstick_at_full_truncated_and_zero_rank(settings, base, monkeypatch):
    tokenizer = load_tokenizer()
    examples = evenly_spaced(load_examples("sql", "validation"), 3)
    untouched = {n: p.detach().clone() for n, p in base.named_parameters()}
    zero = full_finetune_example_losses(settings, rank=0, n=3, model=base)
    assert all(torch.equal(p, untouched[n]) for n, p in base.named_parameters())  # the model is left as it was
    assert zero.sums == pytest.approx(answer_token_losses(base, tokenizer, examples)[0], rel=1e-5)
    full = full_finetune_example_losses(settings, n=3, model=base)
    tuned = load_full_finetune(settings, model=copy.deepcopy(base))
    assert full.sums == pytest.approx(answer_token_losses(tuned, tokenizer, examples)[0], rel=1e-5)
    one = full_finetune_example_losses(settings, rank=1, n=3, model=base)
    assert one.counts == full.counts and one.sums != full.sums
    folder = full_finetune_dir(settings)
    assert {p.name for p in folder.glob("losses-*.json")} == {
        "losses-validation-3-rank0.json", "losses-validation-3-full.json", "losses-validation-3-rank1.json"}

    def no_scoring(*args, **kwargs):
        raise AssertionError("cached losses must not be computed again")

    monkeypatch.setattr(full_finetune_module, "answer_token_losses", no_scoring)
    assert full_finetune_example_losses(settings, n=3) == full
    with pytest.raises(ValueError, match="rank must be None"):
        full_finetune_example_losses(settings, rank=-1, n=3)


def test_full_finetune_is_cached_with_its_validation_curve(settings, monkeypatch):  # last: it deletes the run
    folder = train_full_finetune(settings)
    assert folder == full_finetune_dir(settings)
    log = read_train_log(folder)
    assert len(log["losses"]) == 2 and [step for step, _ in log["validation_losses"]] == [0, 1, 2]
    assert log["seconds"] > 0 and log["tokens_per_second"] > 0 and log["settings"] == settings
    delta_w = read_delta_w(folder)
    layers = MINI_SHAPE["num_hidden_layers"]
    assert len(delta_w) == 2 * layers and all(d.abs().max() > 0 for d in delta_w.values())  # q and v of every layer
    assert not list(folder.glob("*.partial"))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached full fine-tune must not be trained again")

    monkeypatch.setattr(full_finetune_module, "train", no_training)
    assert train_full_finetune(settings) == folder
    assert full_finetune_dir(full_finetune_settings(steps=2, batch_size=2, seed=1)) != folder  # one knob: new folder
    with pytest.raises(AssertionError, match="must not be trained"):
        train_full_finetune(settings, force=True)
